"""Label schemes on any dataset's class list (paper section 5.3, protocol section 6).

:mod:`csaws_tools.labels` builds schemes for the 12 CSAW-S classes only; its
spec grammar and its :class:`~csaws_tools.labels.LabelScheme` lookup-table
type are reused here for an arbitrary class table (ids 0..K-1, a
background id, an optional void id, one expert target).

Scheme ids are: background 0, target 1, then the kept complementary classes
in dataset id order; void stays void (255, ignored by loss and IoU), or
becomes the last class when ``void_as_class`` (what the authors' VOC code
did with its "ambiguous" class). The lookup table has 256 entries, so
``lut[labels]`` (``np.take``) maps any uint8 label map in one vectorised
step; ids outside the class table map to void.

Spec strings (class names compared case-insensitively, spaces, hyphens and
slashes taken as underscores):

``all``                      every class (the WITH setting)
``binary``                   target against background (the WITHOUT setting)
``leave-one-out:<class>``    that complementary class merged into background (Figure 7)
``keep:<a>,<b>,...``         only these complementary classes
``random:<k>:<seed>``        k complementary classes picked at random (Figure 8)
``merge:<a>+<b>=<name>[,...]`` groups of complementary classes become one class each

The target itself may be a merge, ``human=person+rider`` (appendix C, Figure 13):
the members become one target class and are no longer complementary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import SettingsError
from ...labels import LabelScheme

VOID_OUT = 255
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def norm(name: str) -> str:
    """How class names are compared: lower case, spaces, hyphens and slashes as underscores."""
    return re.sub(r"[\s\-/]+", "_", str(name).strip().lower())


@dataclass(frozen=True, eq=False)
class DatasetScheme(LabelScheme):
    """A :class:`~csaws_tools.labels.LabelScheme` over a dataset's ids (256-entry table).

    ``void_out``: the id loss and IoU ignore (255), or None when the dataset has no void.
    """

    target_name: str = ""
    void_out: int | None = VOID_OUT

    @property
    def target_id(self) -> int:
        """The target's id under the scheme (always 1)."""
        return 1

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Map a uint8 label map (any shape) to scheme ids: one ``np.take``."""
        labels = np.asarray(labels)
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise SettingsError("label maps hold ids 0..255")
            labels = labels.astype(np.uint8)
        return np.take(self.lut, labels)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(target=self.target_name, void=self.void_out)
        return d


def _resolve(names: Sequence[str], name: str, what: str) -> int:
    n = norm(name)
    for i, c in enumerate(names):
        if norm(c) == n:
            return i
    raise SettingsError(f"{what}: unknown class {name.strip()!r}; classes: {', '.join(names)}")


def parse_target(target: str, names: Sequence[str]) -> tuple[str, list[int]]:
    """``"person"`` -> ("person", [24]); ``"human=person+rider"`` -> ("human", [24, 25])."""
    text = str(target).strip()
    if "=" in text:
        label, _, members = text.partition("=")
        label = label.strip()
        if not _NAME_RE.match(label):
            raise SettingsError(f"target {target!r}: the merged name may use letters, digits, '_' and '-' only")
        ids = sorted({_resolve(names, m, f"target {target!r}") for m in members.split("+") if m.strip()})
        if len(ids) < 2:
            raise SettingsError(f"target {target!r}: a merged target needs two classes, e.g. human=person+rider")
        return label, ids
    i = _resolve(names, text, "target")
    return names[i], [i]


def build_scheme(spec: str, names: Sequence[str], *, target: str, background: int = 0, void: int | None = None,
                 void_as_class: bool = False) -> DatasetScheme:
    """Build the scheme ``spec`` for a class table ``names`` (ids 0..K-1); see the module docstring.

    Raises :class:`SettingsError` with the valid forms and classes for a bad spec.
    """
    names = [str(n) for n in names]
    k = len(names)
    if not 0 <= background < k:
        raise SettingsError(f"background id {background} is not a class (0..{k - 1})")
    target_name, target_ids = parse_target(target, names)
    if background in target_ids:
        raise SettingsError(f"target {target!r}: the background class {names[background]!r} cannot be the target")
    complementary = [i for i in range(k) if i != background and i not in target_ids]
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    kind, rest = kind.strip().lower(), rest.strip()

    def comp(name: str) -> int:
        i = _resolve(names, name, f"label scheme {spec!r}")
        if i == background or i in target_ids:
            raise SettingsError(f"label scheme {spec!r}: {names[i]!r} is the background or the target, "
                                "always kept as its own class")
        return i

    groups: list[list[int]]  # complementary groups in output order
    group_names: list[str]
    if kind == "all" and not rest:
        groups = [[i] for i in complementary]
        norm_spec = "all"
    elif kind == "binary" and not rest:
        groups, norm_spec = [], "binary"
    elif kind == "leave-one-out":
        if not rest or "," in rest:
            raise SettingsError(f"label scheme {spec!r}: leave-one-out takes one class, e.g. leave-one-out:car")
        out = comp(rest)
        groups = [[i] for i in complementary if i != out]
        norm_spec = f"leave-one-out:{norm(names[out])}"
    elif kind == "keep":
        kept = {comp(n) for n in rest.split(",") if n.strip()}
        groups = [[i] for i in complementary if i in kept]
        norm_spec = "keep:" + ",".join(norm(names[g[0]]) for g in groups)
    elif kind == "random":
        try:
            n_keep, seed = (int(p) for p in rest.split(":"))
        except ValueError:
            raise SettingsError(f"label scheme {spec!r}: expected random:<k>:<seed>, e.g. random:4:0") from None
        if not 0 <= n_keep <= len(complementary):
            raise SettingsError(f"label scheme {spec!r}: k must be 0..{len(complementary)} "
                                f"(the complementary classes of this dataset)")
        if seed < 0:
            raise SettingsError(f"label scheme {spec!r}: the seed must not be negative")
        picked = np.random.default_rng(seed).choice(len(complementary), size=n_keep, replace=False)
        kept = {complementary[int(j)] for j in picked}
        groups = [[i] for i in complementary if i in kept]
        norm_spec = f"random:{n_keep}:{seed}"
    elif kind == "merge":
        owner: dict[int, str] = {}
        merged: dict[str, list[int]] = {}
        for part in rest.split(","):
            left, eq, label = part.partition("=")
            label = label.strip()
            if not eq or not _NAME_RE.match(label or "-"):
                raise SettingsError(f"label scheme {spec!r}: each merge reads <a>+<b>=<name> (name: letters, digits, _ -)")
            ids = sorted({comp(m) for m in left.split("+") if m.strip()})
            if len(ids) < 2:
                raise SettingsError(f"label scheme {spec!r}: a merge needs two different classes")
            if label in merged or any(i in owner for i in ids):
                raise SettingsError(f"label scheme {spec!r}: a class or a name appears in two merges")
            merged[label] = ids
            owner.update({i: label for i in ids})
        groups, group_names_m = [], []
        for i in complementary:
            if i not in owner:
                groups.append([i])
                group_names_m.append(names[i])
            elif owner[i] not in group_names_m:
                groups.append(merged[owner[i]])
                group_names_m.append(owner[i])
        norm_spec = "merge:" + ",".join("+".join(norm(names[i]) for i in v) + "=" + lab for lab, v in merged.items())
    else:
        raise SettingsError(f"unknown label scheme {spec!r}; expected all, binary, leave-one-out:<class>, "
                            f"keep:<a>,<b>, random:<k>:<seed> or merge:<a>+<b>=<name>")
    if kind != "merge":
        group_names_m = [names[g[0]] for g in groups]
    group_names = [names[background], target_name] + group_names_m
    void_out: int | None = VOID_OUT if void is not None else None
    lut = np.full(256, VOID_OUT, dtype=np.uint8)  # ids outside the table (refused when preparing) -> 255
    lut[:k] = 0  # classes not kept are background
    lut[target_ids] = 1
    members = {}
    if len(target_ids) > 1:
        members[target_name] = [names[i] for i in target_ids]
    for new_id, group in enumerate(groups, start=2):
        lut[group] = new_id
        if len(group) > 1:
            members[group_names[new_id]] = [names[i] for i in group]
    if void is not None and void_as_class:
        if void < k:
            raise SettingsError(f"void id {void} is also a class")
        lut[void] = len(group_names)
        group_names.append("void")
        void_out = None
    if len(group_names) > 255:
        raise SettingsError(f"{len(group_names)} classes do not fit uint8 ids below the void id 255")
    if target_name in group_names[2:] or norm(target_name) in {norm(n) for n in group_names[2:]}:
        raise SettingsError(f"target name {target_name!r} is also the name of another class")
    lut.setflags(write=False)
    full = norm_spec + (f" target={target}" if norm(target) != norm(target_name) or len(target_ids) > 1 else "")
    return DatasetScheme(spec=full, lut=lut, names=tuple(group_names), members=members,
                         target_name=target_name, void_out=void_out)


def scheme_for(adapter_or_info, spec: str, target: str | None = None, void_as_class: bool = False) -> DatasetScheme:
    """:func:`build_scheme` for an adapter, or for the ``describe()`` dict stored in splits.json / HDF5 files."""
    info = adapter_or_info.describe() if hasattr(adapter_or_info, "describe") else dict(adapter_or_info)
    return build_scheme(spec, info["classes"], target=target or info.get("target") or info["target_default"],
                        background=int(info.get("background", 0)), void=info.get("void"),
                        void_as_class=void_as_class)
