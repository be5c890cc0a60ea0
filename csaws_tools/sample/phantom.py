"""A mammogram-like phantom: a density image and one binary mask per CSAW-S class.

Everything here is plain, vectorised numpy (no per-pixel Python loops), so a
full-size 4096 x 3328 phantom takes about a second. The image is built in a
canonical orientation with the chest wall on the left (a left breast) and
mirrored for a right breast; burned-in text is added after mirroring so it
stays readable, in the top corner away from the chest wall.

The phantom returns *density* (float32, 0 = air, about 0.3 = fat, 0.5 to 0.7
= fibroglandular tissue and muscle, 1 and above = calcium, metal, burned-in
text). :mod:`csaws_tools.sample` maps density onto stored DICOM values.
Masks are drawn from the same geometry as the image, so every structure is
where its mask says. Masks may overlap (a tumour lies inside the mammary
gland); protocol section 1's priority order resolves overlaps when masks are
merged.

Sizes of structures are fractions of the image, tuned so that the class
frequencies come close to the release's table (protocol section 1,
:data:`csaws_tools.classes.PAPER_CLASS_TABLE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..masks.classes import MASK_CLASSES

#: Density levels of the tissues (arbitrary units; only their order matters).
FAT = 0.30
SKIN = 0.40
MUSCLE = 0.56
NIPPLE = 0.44
CALCIUM = 1.25
METAL = 1.30
TEXT_INK = 1.30


@dataclass(frozen=True)
class PhantomSpec:
    """What to draw. ``view`` is "CC" or "MLO", ``laterality`` "L" or "R".

    The optional structures are switched on or off here so that the caller
    controls how often each class occurs across a dataset.
    """

    rows: int
    cols: int
    view: str = "CC"
    laterality: str = "L"
    calcifications: bool = True
    lymph_nodes: bool = False
    foreign_object: bool = False
    text: bool = True
    nipple: bool = True
    non_mammary: bool = False
    thick_vessels: bool = True


@dataclass
class Phantom:
    """A drawn phantom.

    ``density``: float32 (rows, cols). ``masks``: bool arrays for all 11
    classes (all-False for an absent class). ``expert_cancer``: the cancer
    masks of three experts; the first equals ``masks["cancer"]`` and the other
    two are plausible disagreements (scaled, shifted, reshaped outlines).
    """

    density: np.ndarray
    masks: dict[str, np.ndarray]
    expert_cancer: list[np.ndarray] = field(default_factory=list)


# --------------------------------------------------------------------------- noise


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float, beta: float = 2.6,
                 max_side: int = 1024) -> np.ndarray:
    """Zero-mean, unit-variance noise with a power spectrum ~ 1/f^beta.

    ``scale`` (pixels) suppresses structure finer than itself. The noise is
    synthesised by FFT on a grid of at most ``max_side`` pixels a side and
    enlarged bilinearly, which keeps full-size images fast.
    """
    rows, cols = shape
    factor = max(1, int(np.ceil(max(rows, cols) / max_side)))
    r, c = -(-rows // factor), -(-cols // factor)
    white = rng.standard_normal((r, c)).astype(np.float32)
    fy = np.fft.fftfreq(r).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(c).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    cut = factor / max(scale, 1.0)
    spectrum = f ** (-beta / 2) * np.exp(-((f / cut) ** 2))
    spectrum[0, 0] = 0.0
    out = np.fft.irfft2(np.fft.rfft2(white) * spectrum, s=(r, c)).astype(np.float32)
    out -= out.mean()
    out /= out.std() + 1e-12
    if factor > 1:
        out = _enlarge(out, rows, cols)
    return out


def _enlarge(small: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear enlargement of ``small`` to (rows, cols), separable and vectorised."""
    r, c = small.shape
    y = (np.arange(rows, dtype=np.float32) + 0.5) * (r / rows) - 0.5
    x = (np.arange(cols, dtype=np.float32) + 0.5) * (c / cols) - 0.5
    y0 = np.clip(np.floor(y).astype(np.int64), 0, r - 1)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, c - 1)
    y1 = np.minimum(y0 + 1, r - 1)
    x1 = np.minimum(x0 + 1, c - 1)
    wy = np.clip(y - y0, 0, 1)[:, None].astype(np.float32)
    wx = np.clip(x - x0, 0, 1)[None, :].astype(np.float32)
    top = small[y0]
    bottom = small[y1]
    rowsi = top * (1 - wy) + bottom * wy
    return (rowsi[:, x0] * (1 - wx) + rowsi[:, x1] * wx).astype(np.float32)


# --------------------------------------------------------------------------- shapes


def _box(cy: float, cx: float, radius: float, rows: int, cols: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """Bounding box of a disc, clipped to the image, with its local coordinate grids."""
    y0 = min(rows, max(0, int(np.floor(cy - radius)) - 1))
    y1 = max(y0, min(rows, int(np.ceil(cy + radius)) + 2))
    x0 = min(cols, max(0, int(np.floor(cx - radius)) - 1))
    x1 = max(x0, min(cols, int(np.ceil(cx + radius)) + 2))
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    return slice(y0, y1), slice(x0, x1), yy, xx


@dataclass(frozen=True)
class Outline:
    """A star-shaped outline rho(theta) = r0 * (1 + harmonics + spicules)."""

    r0: float
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase)
    spicules: tuple[tuple[float, float, float], ...]  # (angle, relative length, angular width)

    def radius(self, theta: np.ndarray) -> np.ndarray:
        rho = np.ones_like(theta)
        for k, amp, phase in self.harmonics:
            rho += np.float32(amp) * np.sin(k * theta + np.float32(phase))
        for angle, length, width in self.spicules:
            d = np.angle(np.exp(1j * (theta - angle))).astype(np.float32)
            rho += np.float32(length) * np.exp(-((d / np.float32(width)) ** 2))
        return np.float32(self.r0) * rho

    @property
    def extent(self) -> float:
        return self.r0 * (1 + sum(abs(a) for _, a, _ in self.harmonics)
                          + max([s[1] for s in self.spicules], default=0.0)) + 2

    def rasterise(self, cy: float, cx: float, rows: int, cols: int, scale: float = 1.0):
        """(row slice, col slice, inside mask, relative radius) of the outline in its box."""
        ys, xs, yy, xx = _box(cy, cx, self.extent * scale, rows, cols)
        theta = np.arctan2(yy, xx).astype(np.float32)
        rho = np.sqrt(yy * yy + xx * xx)
        rel = rho / (self.radius(theta) * np.float32(scale))
        return ys, xs, rel <= 1.0, rel


def _random_outline(rng: np.random.Generator, r0: float, spiculated: bool) -> Outline:
    harmonics = tuple((k, float(rng.uniform(0.02, 0.09)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 5, 7))
    spicules: tuple = ()
    if spiculated:
        n = int(rng.integers(5, 11))
        spicules = tuple(
            (float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.35, 0.9)), float(rng.uniform(0.04, 0.08)))
            for _ in range(n)
        )
    return Outline(r0, harmonics, spicules)


def _perturbed(rng: np.random.Generator, outline: Outline, scale: float) -> Outline:
    """Another reader's outline of the same lesion: rescaled, reshaped, spicules partly followed."""
    harmonics = tuple((k, a * float(rng.uniform(0.5, 1.3)), p + float(rng.normal(0, 0.4)))
                      for k, a, p in outline.harmonics)
    harmonics += ((4, float(rng.uniform(0.03, 0.06)), float(rng.uniform(0, 2 * np.pi))),)
    spicules = tuple((a, length * float(rng.uniform(0.2, 0.8)), w) for a, length, w in outline.spicules)
    return Outline(outline.r0 * scale, harmonics, spicules)


# --------------------------------------------------------------------------- the phantom


def make_phantom(spec: PhantomSpec, rng: np.random.Generator) -> Phantom:
    """Draw one mammogram-like phantom (see the module docstring)."""
    R, C = spec.rows, spec.cols
    f32 = np.float32
    masks = {name: np.zeros((R, C), dtype=bool) for name in MASK_CLASSES}
    y = np.arange(R, dtype=f32)[:, None]
    x = np.arange(C, dtype=f32)[None, :]
    mlo = spec.view.upper() == "MLO"

    # -- breast outline: a half ellipse from the chest wall (x = 0), tilted on MLO views
    if mlo:
        cy = R * rng.uniform(0.40, 0.46)
        ay = R * rng.uniform(0.42, 0.48)
        ax = C * rng.uniform(0.46, 0.54)
        tilt = np.deg2rad(rng.uniform(8, 16))
    else:
        cy = R * rng.uniform(0.46, 0.54)
        ay = R * rng.uniform(0.36, 0.42)
        ax = C * rng.uniform(0.46, 0.56)
        tilt = np.deg2rad(rng.uniform(-4, 4))
    ct, st = f32(np.cos(tilt)), f32(np.sin(tilt))
    u = (x * ct + (y - f32(cy)) * st) / f32(ax)  # along the breast axis, toward the nipple
    v = (-x * st + (y - f32(cy)) * ct) / f32(ay)  # across it
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    wobble = 1 + f32(rng.uniform(0.01, 0.03)) * np.sin(3 * theta + f32(rng.uniform(0, 6.3))) \
        + f32(rng.uniform(0.005, 0.02)) * np.sin(5 * theta + f32(rng.uniform(0, 6.3)))
    r_eff = r / wobble
    del r, theta, wobble
    breast = r_eff <= 1.0
    # Skin: a band of constant thickness inside the curved boundary (not along the chest wall).
    skin_t = max(1.6, 0.0045 * R)
    # |grad r| of the (untilted) ellipse function gives the band width in r units.
    grad = np.sqrt((u / f32(ax)) ** 2 + (v / f32(ay)) ** 2) / np.maximum(np.sqrt(u * u + v * v), f32(1e-3))
    inner = r_eff <= 1.0 - f32(skin_t) * grad
    del grad
    masks["skin"] = breast & ~inner

    # Thickness of the compressed breast: full in the middle, falling off near the edge.
    thick = np.sqrt(np.clip(1 - r_eff * r_eff, 0, 1)) ** f32(0.35)

    # -- pectoral muscle (MLO): a triangle at the upper chest wall with a slightly convex edge
    pect = np.zeros((R, C), dtype=bool)
    if mlo:
        pw = C * rng.uniform(0.22, 0.32)
        ph = R * rng.uniform(0.40, 0.52)
        edge = x / f32(pw) + y / f32(ph)
        bulge = f32(rng.uniform(0.05, 0.15)) * np.sin(np.pi * np.clip(y / f32(ph), 0, 1))
        pect = (edge - bulge) < 1.0
        del edge, bulge
        masks["pectoral_muscle"] = pect & inner

    # -- non-mammary tissue: abdomen below the fold (MLO) or a sliver of axilla (CC)
    nmt = np.zeros((R, C), dtype=bool)
    if spec.non_mammary:
        if mlo:
            ny, nx = R * rng.uniform(0.07, 0.10), C * rng.uniform(0.06, 0.09)
            nmt = ((y - f32(R)) / f32(ny)) ** 2 + (x / f32(nx)) ** 2 <= 1.0
        else:
            ny, nx = R * rng.uniform(0.06, 0.09), C * rng.uniform(0.04, 0.07)
            y0 = cy - ay * 0.95
            nmt = ((y - f32(y0)) / f32(ny)) ** 2 + (x / f32(nx)) ** 2 <= 1.0
        nmt &= ~pect
        masks["non-mammary_tissue"] = nmt

    gland = inner & ~pect & ~nmt
    masks["mammary_gland"] = gland

    # -- density: fat plus fibroglandular texture, concentrated behind the nipple
    low = smooth_noise(rng, (R, C), scale=0.02 * R, beta=3.0)
    fine = smooth_noise(rng, (R, C), scale=0.004 * R, beta=2.2)
    central = np.clip(1.2 - r_eff * 1.1, 0, 1)
    glandular = np.clip(0.5 * low + 0.25 * fine + 1.4 * central - 0.55, 0, 1)
    density = (f32(FAT) + f32(0.28) * glandular + f32(0.02) * fine) * thick
    density[~breast] = 0.0
    del low, central, glandular
    density[masks["skin"]] = f32(SKIN) + f32(0.02) * fine[masks["skin"]]
    if mlo:
        m = masks["pectoral_muscle"]
        density[m] = f32(MUSCLE) + f32(0.03) * fine[m] - f32(0.08) * (y / f32(R) * np.ones((1, C), f32))[m]
    if spec.non_mammary:
        density[nmt] = np.maximum(density[nmt], f32(0.36) + f32(0.03) * fine[nmt])
    del fine, thick

    # -- nipple: a small bump at the apex of the outline
    if spec.nipple:
        rn = np.sqrt(rng.uniform(0.0007, 0.0012) * R * C / np.pi)
        apex_x = ax * ct
        apex_y = cy + ax * st
        ncx, ncy = apex_x + 0.25 * rn * ct, apex_y + 0.25 * rn * st
        ys, xs, yy, xx = _box(ncy, ncx, rn, R, C)
        disc = yy * yy + xx * xx <= f32(rn * rn)
        masks["nipple"][ys, xs] = disc
        patch = density[ys, xs]
        patch[disc] = np.maximum(patch[disc], f32(NIPPLE))

    # -- thick vessels: gently curving tubes from the chest wall toward the nipple
    if spec.thick_vessels:
        tv = max(1.5, 0.008 * R)
        for _ in range(int(rng.integers(2, 4))):
            x_start = ax * rng.uniform(0.0, 0.1)
            x_end = ax * rng.uniform(0.6, 0.85)
            y0v = cy + ay * rng.uniform(-0.55, 0.55)
            slope = rng.uniform(-0.25, 0.25)
            amp, freq, phase = ay * rng.uniform(0.02, 0.07), rng.uniform(2, 5) / ax, rng.uniform(0, 6.3)
            xs_ = slice(max(0, int(x_start)), min(C, int(x_end)))
            xv = np.arange(xs_.start, xs_.stop, dtype=f32)[None, :]
            centre = f32(y0v) + f32(slope) * xv + f32(amp) * np.sin(f32(freq) * xv + f32(phase))
            half = f32(tv / 2) * np.sqrt(1 + f32(slope) ** 2)
            # only the rows the tube crosses
            ys_ = slice(max(0, int(np.floor(centre.min() - half)) - 1),
                        max(0, min(R, int(np.ceil(centre.max() + half)) + 2)))
            dist = np.abs(y[ys_] - centre)
            tube = (dist <= half) & gland[ys_, xs_]
            masks["thick_vessels"][ys_, xs_] |= tube
            profile = np.sqrt(np.clip(1 - (dist / half) ** 2, 0, 1))
            region = density[ys_, xs_]
            region += np.where(tube, f32(0.12) * profile, f32(0))
            del dist, tube, profile

    # -- the tumour: a spiculated or lobulated bright mass inside the gland
    r0 = np.sqrt(rng.uniform(0.0015, 0.0045) * R * C / np.pi)
    spiculated = bool(rng.random() < 0.6)
    outline = _random_outline(rng, r0, spiculated)
    for _ in range(20):
        rr, tt = rng.uniform(0.15, 0.7), rng.uniform(-1.1, 1.1)
        tu, tv_ = rr * np.cos(tt), rr * np.sin(tt)
        tcx = ax * tu * ct - ay * tv_ * st
        tcy = cy + ax * tu * st + ay * tv_ * ct
        iy, ix = int(np.clip(tcy, 0, R - 1)), int(np.clip(tcx, 0, C - 1))
        if gland[iy, ix]:
            break
    ys, xs, inside, rel = outline.rasterise(tcy, tcx, R, C)
    inside &= breast[ys, xs]
    masks["cancer"][ys, xs] = inside
    core = np.clip(1 - rel, 0, 1)
    density[ys, xs] += np.where(inside, f32(0.22) + f32(0.18) * np.sqrt(core), f32(0))
    experts = [masks["cancer"]]
    for scale in (rng.uniform(1.06, 1.16), rng.uniform(0.84, 0.94)):
        other = _perturbed(rng, outline, 1.0)
        shift = rng.uniform(0.05, 0.12) * r0
        angle = rng.uniform(0, 2 * np.pi)
        oys, oxs, oin, _ = other.rasterise(tcy + shift * np.sin(angle), tcx + shift * np.cos(angle), R, C,
                                           scale=scale)
        em = np.zeros((R, C), dtype=bool)
        em[oys, oxs] = oin & breast[oys, oxs]
        experts.append(em)

    # -- calcifications: a cluster of tiny bright dots near the tumour or elsewhere in the gland
    if spec.calcifications:
        rc = max(1.0, 0.0012 * R)
        near = rng.random() < 0.6
        ccy, ccx = (tcy, tcx) if near else (cy + ay * rng.uniform(-0.4, 0.4), ax * rng.uniform(0.3, 0.7))
        spread = r0 * rng.uniform(1.0, 2.0)
        for _ in range(int(rng.integers(5, 14))):
            dy, dx = rng.normal(0, spread, 2)
            dcy, dcx = ccy + dy, ccx + dx
            ys, xs, yy, xx = _box(dcy, dcx, rc, R, C)
            dot = (yy * yy + xx * xx <= f32(rc * rc)) & breast[ys, xs]
            masks["calcifications"][ys, xs] |= dot
            patch = density[ys, xs]
            patch[dot] = f32(CALCIUM)

    # -- axillary lymph nodes (MLO): ovals with a darker fatty hilum, near the pectoral edge
    if spec.lymph_nodes and mlo:
        for _ in range(int(rng.integers(1, 3))):
            la, lb = R * rng.uniform(0.022, 0.034), R * rng.uniform(0.014, 0.022)
            lcy = R * rng.uniform(0.06, 0.2)
            lcx = pw * (1 - lcy / ph) + C * rng.uniform(0.02, 0.08)
            rot = rng.uniform(0, np.pi)
            ys, xs, yy, xx = _box(lcy, lcx, la, R, C)
            cu = (xx * f32(np.cos(rot)) + yy * f32(np.sin(rot))) / f32(la)
            cv = (-xx * f32(np.sin(rot)) + yy * f32(np.cos(rot))) / f32(lb)
            rn2 = cu * cu + cv * cv
            node = (rn2 <= 1) & breast[ys, xs]
            masks["axillary_lymph_nodes"][ys, xs] |= node
            patch = density[ys, xs]
            hilum = ((cu - 0.45) ** 2 + cv * cv) < 0.12
            patch[node] = np.where(hilum[node], f32(0.33), f32(0.62))

    # -- a foreign object: a metal clip or a round skin marker
    if spec.foreign_object:
        area = rng.uniform(0.004, 0.010) * R * C
        fcy, fcx = cy + ay * rng.uniform(-0.45, 0.45), ax * rng.uniform(0.25, 0.7)
        if rng.random() < 0.5:  # a rotated rectangular clip
            length = np.sqrt(area * 4)
            width = area / length
            rot = rng.uniform(0, np.pi)
            ys, xs, yy, xx = _box(fcy, fcx, length / 2 + 2, R, C)
            cu = xx * f32(np.cos(rot)) + yy * f32(np.sin(rot))
            cv = -xx * f32(np.sin(rot)) + yy * f32(np.cos(rot))
            obj = (np.abs(cu) <= f32(length / 2)) & (np.abs(cv) <= f32(width / 2))
        else:  # a ring marker
            ro = np.sqrt(area / np.pi / 0.64)
            ys, xs, yy, xx = _box(fcy, fcx, ro, R, C)
            d2 = yy * yy + xx * xx
            obj = (d2 <= f32(ro * ro)) & (d2 >= f32((0.6 * ro) ** 2))
        masks["foreign_object"][ys, xs] |= obj
        patch = density[ys, xs]
        patch[obj] = f32(METAL)

    # -- right breasts are mirrored (chest wall on the right)
    if spec.laterality.upper() == "R":
        density = density[:, ::-1]
        masks = {k: m[:, ::-1] for k, m in masks.items()}
        experts = [m[:, ::-1] for m in experts]

    # -- burned-in text in the top corner away from the chest wall
    if spec.text:
        density = np.ascontiguousarray(density)
        masks["text"] = np.ascontiguousarray(masks["text"])
        _burn_text(rng, density, masks["text"], right=spec.laterality.upper() != "R")

    # -- quantum noise, everywhere
    density = np.ascontiguousarray(density)
    density += rng.standard_normal((R, C), dtype=np.float32) * f32(0.006)
    np.clip(density, 0, None, out=density)
    masks = {k: np.ascontiguousarray(m) for k, m in masks.items()}
    experts = [np.ascontiguousarray(m) for m in experts]
    return Phantom(density=density, masks=masks, expert_cancer=experts)


def _burn_text(rng: np.random.Generator, density: np.ndarray, mask: np.ndarray, right: bool) -> None:
    """Draw a line of blocky 3 x 5 'characters'; the mask covers the text's rectangle."""
    R, C = density.shape
    cell = max(1, int(round(0.0018 * R)))  # one glyph pixel
    n_chars = int(rng.integers(4, 8))
    glyphs = rng.random((n_chars, 5, 3)) < 0.55
    glyphs[:, :, 1] |= ~glyphs.any(axis=2)  # no empty rows
    line = np.zeros((5, n_chars * 4 - 1), dtype=bool)
    for i in range(n_chars):
        line[:, i * 4 : i * 4 + 3] = glyphs[i]
    ink = np.repeat(np.repeat(line, cell, axis=0), cell, axis=1)
    h, w = ink.shape
    margin = max(2, int(0.02 * R))
    if h + 2 * margin > R or w + 2 * margin > C:
        return
    y0 = margin
    x0 = C - margin - w if right else margin
    mask[y0 : y0 + h, x0 : x0 + w] = True
    region = density[y0 : y0 + h, x0 : x0 + w]
    region[ink] = TEXT_INK


__all__ = [
    "CALCIUM",
    "FAT",
    "make_phantom",
    "METAL",
    "MUSCLE",
    "NIPPLE",
    "Outline",
    "Phantom",
    "PhantomSpec",
    "SKIN",
    "smooth_noise",
    "TEXT_INK",
]
