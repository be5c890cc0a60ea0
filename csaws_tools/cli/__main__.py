"""``python -m csaws_tools.cli``: the same as the ``csaws-prepare`` command."""

from . import main

main(prog_name="csaws-prepare")
