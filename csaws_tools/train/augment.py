"""Batch augmentation on whatever device the batch lives on (protocol section 5).

The default (``protocol="paper"``) reproduces what the authors' code does
(SUL ``src/datasets.py`` ``BaseSet.get_trans_list_album`` with albumentations
0.4.3), not the paper's literal numbers:

* ``RandomRotate90(p=0.5)``: with probability 0.5 a rotation by k x 90 degrees,
  k uniform in 0..3 (so k = 0 also happens inside the 0.5);
* ``Flip(p=1)``: always one of horizontal, vertical or both (never the identity);
* ``RandomCrop`` 448 x 448;
* ``RandomBrightnessContrast(0.1, 0.1)`` with p = 0.5: ``x * a + b`` with
  ``a`` uniform in 1 +- 0.1 (contrast scales about 0) and ``b`` uniform in +-0.1
  of the maximum value, clipped to [0, 1];
* ``ElasticTransform(p=0.5, alpha=256, sigma=256*2)``: uniform noise in [-1, 1]
  smoothed by a Gaussian of sigma 512 px (scipy ``gaussian_filter``, mode
  ``reflect``), times alpha. On a 448 crop that is a near-uniform sub-pixel
  shift. ``elastic_sigma=2`` is the paper's literal reading; it tears lesions
  into speckle and is only available as an explicit setting.

``protocol="independent"`` keeps this tool's earlier draw (each flip with p 0.5,
k uniform, contrast about the crop mean, brightness and contrast always).

All geometric steps are folded into ONE sampling grid per sample, so the
image is resampled once (bilinear) and the label map once (nearest
neighbour) with :func:`torch.nn.functional.grid_sample`; image and mask go
through exactly the same coordinates and stay aligned. Everything is
vectorised over the batch: no Python loop over samples or pixels.

Elastic deformation follows Simard et al. (2003): a displacement field of
uniform noise in [-1, 1], smoothed by a Gaussian of ``sigma`` pixels and
scaled by ``alpha`` pixels, drawn independently for rows and columns. The
smoothing is scipy's ``gaussian_filter(mode="reflect", truncate=4)`` exactly,
also when the kernel is far wider than the crop: it is applied as one
(size x size) matrix per axis built with the reflections folded in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

MEAN = 0.176
STD = 0.218
#: Colour images (public-dataset studies): the ImageNet statistics of the initialisation's training data.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


PROTOCOLS = ("paper", "independent")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults are what the authors' code does (protocol section 5).

    ``protocol="paper"``: flips, rotation and brightness/contrast drawn as SUL's
    albumentations pipeline draws them (module docstring);
    ``"independent"``: each flip p 0.5, k uniform in 0..3, brightness and
    contrast always, contrast about the crop mean.
    """

    crop: int | None = 448
    flip: bool = True
    rotate90: bool = True
    elastic_p: float = 0.5
    elastic_alpha: float = 256.0
    elastic_sigma: float = 512.0
    brightness: float = 0.1
    contrast: float = 0.1
    mean: float | tuple[float, ...] = MEAN  # a tuple: one value per channel (colour input)
    std: float | tuple[float, ...] = STD
    protocol: str = "paper"
    rotate90_p: float = 0.5
    intensity_p: float = 0.5

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            from ..errors import SettingsError

            raise SettingsError(f"protocol={self.protocol!r}: expected one of {', '.join(PROTOCOLS)}",
                                param="protocol")

    def to_dict(self) -> dict:
        return asdict(self)


def normalise(img: torch.Tensor, mean: float | tuple[float, ...] = MEAN,
              std: float | tuple[float, ...] = STD) -> torch.Tensor:
    """(x - mean) / std for images on [0, 1]; a sequence gives one value per channel of (B, C, H, W)."""
    if isinstance(mean, (tuple, list)) or isinstance(std, (tuple, list)):
        m = torch.as_tensor(mean, dtype=img.dtype, device=img.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=img.dtype, device=img.device).view(1, -1, 1, 1)
        return (img - m) / s
    return (img - mean) / std


def image_set_augment(cfg: AugmentConfig, channels: int, size: int) -> AugmentConfig:
    """The augmentation of the public-dataset studies (paper section 5.2): as for CSAW-S but no
    rotation and no elastic deformation; colour images normalised with the ImageNet statistics.

    The random crop stays (``cfg.crop``); images smaller than it are used whole.
    """
    from dataclasses import replace

    crop = cfg.crop if cfg.crop is None or int(cfg.crop) <= int(size) else int(size)
    out = replace(cfg, rotate90=False, elastic_p=0.0, crop=crop)
    if channels == 3 and isinstance(cfg.mean, float) and cfg.mean == MEAN and cfg.std == STD:
        out = replace(out, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return out


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius 4 sigma (as scipy's gaussian_filter default truncate)."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, C, H, W) per channel, reflect padding."""
    k = gaussian_kernel1d(sigma, field.device, field.dtype)
    r = k.numel() // 2
    c = field.shape[1]
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    pad_mode = "reflect" if min(field.shape[-2:]) > r else "replicate"
    field = F.conv2d(F.pad(field, (r, r, 0, 0), mode=pad_mode), kx, groups=c)
    return F.conv2d(F.pad(field, (0, 0, r, r), mode=pad_mode), ky, groups=c)


_SMOOTHERS: dict[tuple[int, float], torch.Tensor] = {}


def reflect_gaussian_matrix(n: int, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """(n, n) matrix M with ``M @ x`` = scipy ``gaussian_filter1d(x, sigma, mode="reflect")``.

    The kernel radius may exceed n: every tap is folded back into the signal
    by the half-sample symmetric reflection (period 2n), as scipy does.
    """
    key = (int(n), float(sigma))
    if key not in _SMOOTHERS:
        radius = max(1, int(truncate * float(sigma) + 0.5))
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
        k = k / k.sum()
        i = torch.arange(n, dtype=torch.int64).view(-1, 1)
        src = (i + t.long().view(1, -1)) % (2 * n)
        src = torch.where(src < n, src, 2 * n - 1 - src)
        m = torch.zeros(n, n, dtype=torch.float64)
        m.scatter_add_(1, src, k.view(1, -1).expand(n, -1).contiguous())
        _SMOOTHERS[key] = m.float()
    return _SMOOTHERS[key]


def elastic_field(batch: int, size: int, alpha: float, sigma: float, *, device=None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Displacement in pixels, shape (B, 2, size, size): channel 0 rows, channel 1 columns.

    Uniform noise in [-1, 1] per axis, Gaussian-smoothed (scipy reflect mode,
    any sigma) and scaled by ``alpha`` (albumentations 0.4.3 ``elastic_transform``).
    """
    noise = torch.rand(batch, 2, size, size, device=device, generator=generator) * 2 - 1
    m = reflect_gaussian_matrix(size, sigma).to(noise.device)
    return (m @ noise @ m.T) * alpha


def _rand(n: int, device, generator) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator)


def sampling_grid(batch: int, in_size: tuple[int, int], out_size: int, cfg: AugmentConfig, *,
                  device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The (B, out, out, 2) grid of normalised (x, y) source coordinates for ``grid_sample``.

    Output pixel (i, j) -> rotate/flip about the crop centre -> add the elastic
    displacement -> shift to a random crop position inside the input.
    """
    h, w = in_size
    g = generator
    idx = torch.arange(out_size, device=device, dtype=torch.float32) - (out_size - 1) / 2
    rr, cc = torch.meshgrid(idx, idx, indexing="ij")
    rr = rr.expand(batch, -1, -1)
    cc = cc.expand(batch, -1, -1)
    paper = cfg.protocol == "paper"
    if cfg.rotate90:
        k = torch.randint(0, 4, (batch,), device=device, generator=g)
        if paper:  # RandomRotate90(p=0.5): k uniform in 0..3 inside the 0.5
            k = torch.where(_rand(batch, device, g) < cfg.rotate90_p, k, torch.zeros_like(k))
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[k].view(-1, 1, 1)
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[k].view(-1, 1, 1)
        rr, cc = cos * rr - sin * cc, sin * rr + cos * cc
    if cfg.flip and paper:  # Flip(p=1): d in {-1, 0, 1} -> both, vertical, horizontal
        d = torch.randint(-1, 2, (batch,), device=device, generator=g)
        fr = torch.where(d <= 0, -1.0, 1.0).view(-1, 1, 1)
        fc = torch.where(d != 0, -1.0, 1.0).view(-1, 1, 1)
        rr, cc = rr * fr, cc * fc
    elif cfg.flip:
        fr = torch.where(_rand(batch, device, g) < 0.5, -1.0, 1.0).view(-1, 1, 1)
        fc = torch.where(_rand(batch, device, g) < 0.5, -1.0, 1.0).view(-1, 1, 1)
        rr, cc = rr * fr, cc * fc
    if cfg.elastic_p > 0 and cfg.elastic_alpha > 0:
        disp = elastic_field(batch, out_size, cfg.elastic_alpha, cfg.elastic_sigma, device=device, generator=g)
        on = (_rand(batch, device, g) < cfg.elastic_p).float().view(-1, 1, 1)
        rr = rr + disp[:, 0] * on
        cc = cc + disp[:, 1] * on
    # random crop position: the centre of the crop in input pixel coordinates
    top = torch.floor(_rand(batch, device, g) * (h - out_size + 1)).view(-1, 1, 1)
    left = torch.floor(_rand(batch, device, g) * (w - out_size + 1)).view(-1, 1, 1)
    rr = rr + top + (out_size - 1) / 2
    cc = cc + left + (out_size - 1) / 2
    # align_corners=True: -1 and +1 are the centres of the first and last pixels
    x = cc * (2.0 / max(w - 1, 1)) - 1.0
    y = rr * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack((x, y), dim=-1)


def augment_batch(images: torch.Tensor, masks: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), *,
                  generator: torch.Generator | None = None, normalise_output: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch in place on its device.

    ``images``: float (B, C, H, W) on [0, 1] (or uint8 (B, H, W) / (B, C, H, W),
    converted; C = 1 grey, 3 colour); ``masks``: integer (B, H, W). Returns float32 images (B, C, S, S),
    normalised unless ``normalise_output`` is false, and int64 masks (B, C, C).
    """
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    images = images.float()
    b, _, h, w = images.shape
    size = min(h, w) if cfg.crop is None else int(cfg.crop)
    if size > min(h, w):
        from ..errors import SettingsError

        raise SettingsError(f"crop={size!r} is larger than the {h}x{w} training crops; use crop={min(h, w)} "
                            "or less", param="crop")
    grid = sampling_grid(b, (h, w), size, cfg, device=images.device, generator=generator)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    lab = F.grid_sample(masks.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border",
                        align_corners=True)
    lab = lab.squeeze(1).round_().long()
    if (cfg.brightness or cfg.contrast) and cfg.protocol == "paper":
        # RandomBrightnessContrast(p=0.5), brightness_by_max: x * a + b, clipped
        c = 1.0 + (_rand(b, images.device, generator) * 2 - 1) * cfg.contrast
        d = (_rand(b, images.device, generator) * 2 - 1) * cfg.brightness
        on = _rand(b, images.device, generator) < cfg.intensity_p
        c = torch.where(on, c, torch.ones_like(c))
        d = torch.where(on, d, torch.zeros_like(d))
        out = (out * c.view(-1, 1, 1, 1) + d.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    elif cfg.brightness or cfg.contrast:
        c = 1.0 + (_rand(b, images.device, generator) * 2 - 1) * cfg.contrast
        d = (_rand(b, images.device, generator) * 2 - 1) * cfg.brightness
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * c.view(-1, 1, 1, 1) + mean + d.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if normalise_output:
        out = normalise(out, cfg.mean, cfg.std)
    return out, lab


def prepare_eval(images: torch.Tensor, mean: float | tuple[float, ...] = MEAN,
                 std: float | tuple[float, ...] = STD) -> torch.Tensor:
    """Evaluation input: uint8 or [0, 1] float (B[, C], H, W) -> normalised float (B, C, H, W)."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return normalise(images.float(), mean, std)
