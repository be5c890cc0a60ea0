"""``labels.json``, the one file that says what the ids of a folder of label maps mean.

``merge-masks`` (and ``predict``) write it beside their maps; ``stats``,
``preview``, ``patches``, ``export`` and the evaluation read it. A
:class:`LabelSet` is its content: class names and display colours indexed
by id, the numbering (protocol section 1: ``standard`` background 0,
cancer 1, ...; ``release`` cancer 0, ..., background 11) and the label
scheme (:mod:`csaws_tools.masks.labels`). The 12 classes in the standard
numbering are the identity scheme ``all``: every other numbering and scheme
is derived from it, so there is one table of ids.

Example::

    from csaws_tools.masks.labelset import LabelSet
    LabelSet.of("binary").write("maps/")              # maps/labels.json
    labels = LabelSet.near("maps/test/consensus", max_up=2)
    labels.names                                       # ("background", "cancer")
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, SettingsError, one_line
from .classes import NUMBERINGS
from .labels import LabelScheme, parse_scheme, scheme_labels_table, scheme_palette

__all__ = [
    "LABELS_NAME",
    "LabelSet",
    "find_labels_json",
    "labels_json",
    "labels_table",
    "names_from_labels_json",
    "palette",
]

#: The file name, beside the label maps or in a parent folder.
LABELS_NAME = "labels.json"
_GREY = (128, 128, 128)


def _check_numbering(numbering: str) -> None:
    if numbering not in NUMBERINGS:
        raise SettingsError(f"numbering={numbering!r}: expected one of {', '.join(NUMBERINGS)}", param="numbering")


@dataclass(frozen=True)
class LabelSet:
    """What a ``labels.json`` says: names and colours by id, numbering and label-scheme spec.

    ``numbering`` is None for a file that does not record one; ``path`` is
    where it was read from (None when built with :meth:`of`).
    """

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    numbering: str | None = "standard"
    scheme: str = "all"
    path: Path | None = None

    # ------------------------------------------------------------ building
    @classmethod
    def of(cls, scheme: str | LabelScheme = "all", numbering: str = "standard") -> LabelSet:
        """The label set maps written with ``scheme`` under ``numbering`` have."""
        _check_numbering(numbering)
        obj = parse_scheme(scheme)
        names = tuple(r["name"] for r in scheme_labels_table(obj, numbering))
        return cls(names=names, colours=tuple(scheme_palette(obj, numbering)), numbering=numbering, scheme=obj.spec)

    @property
    def is_standard(self) -> bool:
        """The 12 classes in the standard numbering (what patches store)."""
        return self.numbering in (None, "standard") and self.scheme == "all"

    def label_scheme(self) -> LabelScheme:
        return parse_scheme(self.scheme)

    def table(self) -> list[dict]:
        """One record per id: name, id, priority, colour (and ``members`` of merged classes)."""
        if self.numbering is None:
            raise InputError(f"{self.path or 'this label set'}: records no numbering, so it has no labels.json table")
        return scheme_labels_table(self.label_scheme(), self.numbering)

    def to_json(self) -> str:
        """The ``labels.json`` text (without the final newline)."""
        scheme = self.label_scheme()
        doc: dict[str, Any] = {"numbering": self.numbering}
        if not scheme.is_identity:
            doc["scheme"] = scheme.to_dict()
        doc["classes"] = self.table()
        return json.dumps(doc, indent=2)

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/labels.json`` atomically; return its path."""
        from ..atomic import write_text_atomic

        path = Path(folder) / LABELS_NAME
        write_text_atomic(path, self.to_json() + "\n")
        return path

    # ------------------------------------------------------------ reading
    @staticmethod
    def find(folder: str | os.PathLike, max_up: int | None = None) -> Path | None:
        """The ``labels.json`` in ``folder`` or its nearest parent that has one.

        ``max_up`` limits how many parents are looked at (``None``: all of them).
        """
        folder = Path(folder).resolve()
        parents = list(folder.parents) if max_up is None else list(folder.parents)[:max_up]
        for cand in (folder, *parents):
            if (cand / LABELS_NAME).is_file():
                return cand / LABELS_NAME
        return None

    @classmethod
    def read(cls, path: str | os.PathLike) -> LabelSet:
        """Read a ``labels.json``; :class:`~csaws_tools.errors.InputError` naming it when it is not one.

        Ids must be 0..N-1. Colours missing from a record are grey.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            classes = sorted(doc["classes"], key=lambda r: int(r["id"]))
            names = tuple(str(r["name"]) for r in classes)
            if [int(r["id"]) for r in classes] != list(range(len(names))):
                raise ValueError("ids are not 0..N-1")
            colours = tuple(_colour(r.get("colour")) for r in classes)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: not a labels.json written by merge-masks ({one_line(exc)})") from None
        scheme = doc.get("scheme")
        spec = str((scheme or {}).get("spec", "all")) if isinstance(scheme, dict) else "all"
        numbering = doc.get("numbering")
        return cls(names=names, colours=colours, numbering=None if numbering is None else str(numbering),
                   scheme=spec, path=path)

    @classmethod
    def near(cls, folder: str | os.PathLike, max_up: int | None = None) -> LabelSet | None:
        """:meth:`read` the ``labels.json`` :meth:`find` gives, or None when there is none."""
        path = cls.find(folder, max_up)
        return None if path is None else cls.read(path)


def _colour(value: Any) -> tuple[int, int, int]:
    if value is None:
        return _GREY
    r, g, b = (int(v) for v in value)
    return (r, g, b)


# Functions kept for the callers that want one value (documented API).

def find_labels_json(folder: str | os.PathLike, max_up: int | None = None) -> Path | None:
    """:meth:`LabelSet.find`."""
    return LabelSet.find(folder, max_up)


def names_from_labels_json(path: str | os.PathLike) -> list[str]:
    """Class names indexed by id from a ``labels.json`` (:meth:`LabelSet.read`)."""
    return list(LabelSet.read(path).names)


def labels_table(numbering: str = "standard") -> list[dict]:
    """One record per class of the 12 (name, id, priority, display colour) under ``numbering``."""
    return LabelSet.of("all", numbering).table()


def labels_json(numbering: str = "standard") -> str:
    """The ``labels.json`` text for the 12 classes under ``numbering``."""
    return LabelSet.of("all", numbering).to_json()


def palette(numbering: str = "standard") -> list[tuple[int, int, int]]:
    """RGB palette indexed by class id (for palette PNGs and overlays)."""
    return list(LabelSet.of("all", numbering).colours)
