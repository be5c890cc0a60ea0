"""``python -m csaws_tools.cli``: the same as the ``csaws-prepare`` command."""

from . import main

if __name__ == "__main__":
    main(prog_name="csaws-prepare")
