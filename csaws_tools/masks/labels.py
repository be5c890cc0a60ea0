"""Label schemes: which of the 12 CSAW-S classes a model sees, and under which ids.

The study trains with all 12 classes, with cancer alone against everything
else, and with one complementary class left out at a time (protocol
section 5). A :class:`LabelScheme` is a lookup table from the standard
numbering (background 0, cancer 1, ..., mammary gland 11; protocol
section 1) to the scheme's ids, with the resulting class names, so that
every tool that writes or reads label maps applies it the same way and can
record it.

Scheme ids are always: background 0, cancer 1, then the other kept classes
in priority order, numbered consecutively.

Spec strings (:func:`parse_scheme`):

``all``
    the 12 classes unchanged.
``binary``
    cancer against everything else (background, cancer).
``leave-one-out:<class>``
    that complementary class merged into background.
``keep:<class>,<class>,...``
    only the listed complementary classes (cancer is always kept).
``random:<k>:<seed>``
    ``k`` of the 10 complementary classes picked at random (deterministic
    for a given seed), the rest merged into background.
``merge:<a>+<b>[+...]=<name>[,<c>+<d>=<name2>...]``
    each group of complementary classes becomes one class called
    ``<name>``, placed at the highest priority of its members; several
    groups are separated by commas.

Class names are matched case-insensitively, with spaces and hyphens taken
as underscores (``"Pectoral muscle"`` is ``pectoral_muscle``,
``non_mammary_tissue`` is ``non-mammary_tissue``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, SettingsError
from .classes import (
    BACKGROUND,
    COLOURS,
    COMPLEMENTARY_CLASSES,
    MAIN_CLASS,
    class_names,
    normalise_class_name,
)

#: Class names indexed by standard id (background 0, cancer 1, ..., mammary_gland 11).
STANDARD_NAMES: tuple[str, ...] = tuple(class_names("standard"))
SCHEME_KINDS = ("all", "binary", "leave-one-out", "keep", "random", "merge")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


normalise_name = normalise_class_name


_BY_NORMALISED = {normalise_name(n): n for n in STANDARD_NAMES}


def class_token(name: str) -> str | None:
    """The class token a free-form name stands for, or ``None``.

    ``"Pectoral muscle"`` -> ``"pectoral_muscle"``,
    ``"Non-mammary tissue"`` -> ``"non-mammary_tissue"``.
    """
    return _BY_NORMALISED.get(normalise_name(name))


@dataclass(frozen=True, eq=False)
class LabelScheme:
    """A lookup table from standard ids to scheme ids, with the scheme's class names."""

    spec: str
    lut: np.ndarray
    names: tuple[str, ...]
    #: scheme class name -> standard class names it covers
    members: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def is_identity(self) -> bool:
        """True for ``all``: ids are unchanged."""
        return self.names == STANDARD_NAMES

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Map an array of standard ids (any shape) to scheme ids."""
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.lut)):
            raise InputError(
                f"label map holds value {int(labels.max()) if labels.max() >= len(self.lut) else int(labels.min())}, "
                f"outside the standard ids 0..{len(self.lut) - 1}"
            )
        return self.lut[labels]

    def colours(self) -> list[tuple[int, int, int]]:
        """Display colour per scheme id (a merged class takes its highest-priority member's colour)."""
        return [COLOURS[self.members[n][0]] if n in self.members else COLOURS.get(n, (128, 128, 128))
                for n in self.names]

    def to_dict(self) -> dict:
        """A JSON-able record of the scheme (spec, names, lookup table)."""
        return {"spec": self.spec, "names": list(self.names), "lut": [int(v) for v in self.lut]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelScheme) and self.spec == other.spec and self.names == other.names \
            and np.array_equal(self.lut, other.lut)

    def __hash__(self) -> int:
        return hash((self.spec, self.names))

    def __repr__(self) -> str:
        return f"LabelScheme({self.spec!r}, names={self.names})"


def _error(message: str) -> SettingsError:
    return SettingsError(f"{message}; complementary classes: {', '.join(COMPLEMENTARY_CLASSES)}")


def _complementary(name: str, spec: str) -> str:
    token = class_token(name)
    if token is None:
        raise _error(f"label scheme {spec!r}: unknown class {name.strip()!r}")
    if token in (BACKGROUND, MAIN_CLASS):
        raise _error(f"label scheme {spec!r}: {token} cannot be used here (it is always kept as its own class)")
    return token


def _build(spec: str, groups: list[list[str]], group_names: list[str]) -> LabelScheme:
    """Scheme from ordered groups of standard classes (background and cancer first)."""
    lut = np.zeros(len(STANDARD_NAMES), dtype=np.uint8)
    members = {}
    for new_id, (group, name) in enumerate(zip(groups, group_names)):
        for cls in group:
            lut[STANDARD_NAMES.index(cls)] = new_id
        if len(group) > 1 or group[0] != name:
            members[name] = [c for c in STANDARD_NAMES if c in group]
    lut.setflags(write=False)
    return LabelScheme(spec=spec, lut=lut, names=tuple(group_names), members=members)


def _kept(spec: str, kept: list[str]) -> LabelScheme:
    kept = [c for c in COMPLEMENTARY_CLASSES if c in set(kept)]
    dropped = [c for c in COMPLEMENTARY_CLASSES if c not in kept]
    groups = [[BACKGROUND] + dropped, [MAIN_CLASS]] + [[c] for c in kept]
    scheme = _build(spec, groups, [BACKGROUND, MAIN_CLASS] + kept)
    return LabelScheme(spec=spec, lut=scheme.lut, names=scheme.names, members={})


def parse_scheme(spec: str | LabelScheme) -> LabelScheme:
    """Parse a scheme spec (see the module docstring); a :class:`LabelScheme` passes through.

    Raises :class:`SettingsError` with the valid forms and classes for a bad spec.
    """
    if isinstance(spec, LabelScheme):
        return spec
    if not isinstance(spec, str):
        raise SettingsError(f"a label scheme is a string such as 'all' or 'binary', not {type(spec).__name__}")
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    rest = rest.strip()
    if kind == "all" and not rest:
        return _kept("all", list(COMPLEMENTARY_CLASSES))
    if kind == "binary" and not rest:
        return _kept("binary", [])
    if kind == "leave-one-out":
        if not rest or "," in rest:
            raise _error(f"label scheme {spec!r}: leave-one-out takes exactly one class, e.g. leave-one-out:skin")
        token = _complementary(rest, spec)
        return _kept(f"leave-one-out:{token}", [c for c in COMPLEMENTARY_CLASSES if c != token])
    if kind == "keep":
        names = [n for n in rest.split(",") if n.strip()]
        tokens = set()
        for n in names:
            if class_token(n) == MAIN_CLASS:
                continue  # cancer is always kept
            tokens.add(_complementary(n, spec))
        kept = [c for c in COMPLEMENTARY_CLASSES if c in tokens]
        return _kept("keep:" + ",".join(kept), kept)
    if kind == "random":
        parts = rest.split(":")
        try:
            k, seed = (int(p) for p in parts)
        except ValueError:
            raise _error(f"label scheme {spec!r}: expected random:<k>:<seed> with whole numbers, e.g. random:3:0") \
                from None
        if not 0 <= k <= len(COMPLEMENTARY_CLASSES):
            raise _error(f"label scheme {spec!r}: k must be 0..{len(COMPLEMENTARY_CLASSES)}")
        if seed < 0:
            raise _error(f"label scheme {spec!r}: the seed must not be negative")
        picked = np.random.default_rng(seed).choice(len(COMPLEMENTARY_CLASSES), size=k, replace=False)
        kept = [COMPLEMENTARY_CLASSES[i] for i in sorted(int(i) for i in picked)]
        return _kept(f"random:{k}:{seed}", kept)
    if kind == "merge":
        return _parse_merge(spec, rest)
    raise SettingsError(
        f"unknown label scheme {spec!r}; expected one of: all, binary, leave-one-out:<class>, "
        f"keep:<class>,<class>,..., random:<k>:<seed>, merge:<a>+<b>=<name>; "
        f"complementary classes: {', '.join(COMPLEMENTARY_CLASSES)}"
    )


def _parse_merge(spec: str, rest: str) -> LabelScheme:
    if not rest:
        raise _error(f"label scheme {spec!r}: expected merge:<a>+<b>=<name>")
    owner: dict[str, str] = {}
    merged: list[tuple[str, list[str]]] = []
    for part in rest.split(","):
        left, eq, name = part.partition("=")
        name = name.strip()
        if not eq or not name:
            raise _error(f"label scheme {spec!r}: each merge reads <a>+<b>=<name>, not {part.strip()!r}")
        if not _NAME_RE.match(name):
            raise SettingsError(f"label scheme {spec!r}: class name {name!r} may use letters, digits, '_' and '-' only")
        tokens = [_complementary(n, spec) for n in left.split("+")]
        if len(set(tokens)) < 2:
            raise _error(f"label scheme {spec!r}: a merge needs at least two different classes, got {left.strip()!r}")
        for t in tokens:
            if t in owner:
                raise _error(f"label scheme {spec!r}: {t} appears in more than one merge")
            owner[t] = name
        merged.append((name, tokens))
    new_names = [n for n, _ in merged]
    if len(set(new_names)) != len(new_names):
        raise SettingsError(f"label scheme {spec!r}: two merges have the same name")
    for name, tokens in merged:
        token = class_token(name)
        if token is not None and token not in tokens:
            raise SettingsError(f"label scheme {spec!r}: the merged name {name!r} is the name of another class")
    # Order: background, cancer, then classes/groups at their highest-priority member's position.
    groups: list[list[str]] = [[BACKGROUND], [MAIN_CLASS]]
    names: list[str] = [BACKGROUND, MAIN_CLASS]
    for cls in COMPLEMENTARY_CLASSES:
        if cls not in owner:
            groups.append([cls])
            names.append(cls)
        elif owner[cls] not in names:
            groups.append([t for t in COMPLEMENTARY_CLASSES if owner.get(t) == owner[cls]])
            names.append(owner[cls])
    ordered = [(name, [t for t in COMPLEMENTARY_CLASSES if owner.get(t) == name]) for name in names if name in new_names]
    norm = "merge:" + ",".join("+".join(tokens) + "=" + name for name, tokens in ordered)
    return _build(norm, groups, names)


def scheme_ids(scheme: LabelScheme, numbering: str = "standard") -> np.ndarray:
    """Lookup table standard id -> written id for ``scheme`` under ``numbering``.

    ``"standard"`` gives the scheme ids; ``"release"`` moves background to the
    last id and numbers the other classes from 0, as the original scripts did
    (for ``all`` this is exactly the release numbering of protocol section 1).
    """
    lut = scheme.lut.astype(np.int64)
    if numbering == "standard":
        return lut.astype(np.uint8)
    if numbering == "release":
        return ((lut - 1) % scheme.num_classes).astype(np.uint8)
    raise SettingsError(f"numbering={numbering!r}: expected 'standard' or 'release'", param="numbering")


def scheme_names(scheme: LabelScheme, numbering: str = "standard") -> list[str]:
    """Class names indexed by written id for ``scheme`` under ``numbering``."""
    names = list(scheme.names)
    return names if numbering == "standard" else names[1:] + names[:1]


def scheme_palette(scheme: LabelScheme, numbering: str = "standard") -> list[tuple[int, int, int]]:
    """Display colours indexed by written id for ``scheme`` under ``numbering``."""
    colours = scheme.colours()
    return colours if numbering == "standard" else colours[1:] + colours[:1]


def scheme_labels_table(scheme: LabelScheme, numbering: str = "standard") -> list[dict]:
    """``labels.json`` records (name, id, priority, colour) for ``scheme`` under ``numbering``."""
    names = scheme_names(scheme, numbering)
    colours = scheme_palette(scheme, numbering)
    order = list(scheme.names[1:]) + [BACKGROUND]  # priority: cancer first, background last
    rows = []
    for i, (name, colour) in enumerate(zip(names, colours)):
        row = {"name": name, "id": i, "priority": order.index(name) + 1, "colour": list(colour)}
        if name in scheme.members:
            row["members"] = list(scheme.members[name])
        rows.append(row)
    return rows


__all__ = [
    "class_token",
    "LabelScheme",
    "parse_scheme",
    "scheme_ids",
    "SCHEME_KINDS",
    "scheme_labels_table",
    "scheme_names",
    "scheme_palette",
    "STANDARD_NAMES",
]
