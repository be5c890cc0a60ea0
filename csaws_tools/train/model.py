"""DeepLabv3 with a ResNet-50 backbone in plain torch (protocol section 5).

The module tree and parameter names follow torchvision's
``deeplabv3_resnet50`` exactly (``backbone.conv1``, ``backbone.layer1.0.conv1``,
``classifier.0.convs.0.0``, ``classifier.4``, ``aux_classifier.0`` ...), so
torchvision checkpoints load by name. Differences, as in the CSAW-S study:

* every BatchNorm is a ``GroupNorm(32, C)`` (module names such as ``bn1`` are
  kept so that the affine weights of a checkpoint map onto them; the running
  statistics of a BatchNorm checkpoint have no counterpart and are skipped);
* one input channel (the first convolution keeps the filters of the first
  RGB channel of a pretrained checkpoint);
* output stride 8 (layers 3 and 4 dilated) or 16 (layer 4 dilated).

:func:`load_pretrained` reads a local file; :func:`resolve_pretrained` turns
``"imagenet"`` into torchvision's V1 ResNet-50 weights (``resnet50-19c8e357.pth``,
the file torchvision 0.4 and the authors' code used) found in the torch hub
cache, or downloaded there with its SHA-256 prefix checked when the machine is online.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, SettingsError

GROUPS = 32

#: torchvision's V1 ImageNet ResNet-50 weights (torchvision <= 0.12 ``pretrained=True``; SUL ``src/models.py``).
IMAGENET_URL = "https://download.pytorch.org/models/resnet50-19c8e357.pth"
IMAGENET_FILE = IMAGENET_URL.rsplit("/", 1)[-1]
IMAGENET_HASH_PREFIX = "19c8e357"  # torch.hub's check_hash: the SHA-256 starts with the name's suffix


def hub_checkpoint_dir() -> str:
    """``$TORCH_HOME/hub/checkpoints`` (torch.hub's cache of downloaded weights)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def resolve_pretrained(spec: str | os.PathLike | None) -> str | None:
    """The weights file of ``pretrained``: None for ``none``; a path for ``imagenet`` or a file.

    ``imagenet``: ``resnet50-19c8e357.pth`` from the torch hub cache, else
    downloaded there by ``torch.hub.load_state_dict_from_url(check_hash=True)``;
    offline without the file this is a :class:`SettingsError` saying where to put it.
    """
    if spec is None or str(spec).lower() in ("", "none", "scratch"):
        return None
    if str(spec).lower() != "imagenet":
        if not os.path.isfile(spec):
            raise SettingsError(f"pretrained={str(spec)!r}: file not found (give a file, 'imagenet' or 'none')",
                                param="pretrained")
        return str(spec)
    cached = os.path.join(hub_checkpoint_dir(), IMAGENET_FILE)
    if os.path.isfile(cached):
        return cached
    try:
        torch.hub.load_state_dict_from_url(IMAGENET_URL, map_location="cpu", progress=False, check_hash=True,
                                           weights_only=True)
    except Exception as exc:  # noqa: BLE001 - offline, proxy, hash mismatch: all end the same way
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(
            f"pretrained='imagenet': {IMAGENET_FILE} is not in {hub_checkpoint_dir()} and could not be downloaded "
            f"({reason}); copy it there from {IMAGENET_URL} (or set TORCH_HOME), give pretrained=FILE, or "
            f"pretrained='none' to train from scratch", param="pretrained") from None
    if not os.path.isfile(cached):
        raise SettingsError(f"pretrained='imagenet': download finished but {cached} is missing", param="pretrained")
    return cached


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), replacing BatchNorm."""
    return nn.GroupNorm(GROUPS, channels)


class AtrousConv2d(nn.Conv2d):
    """A dilated 3x3 convolution that skips the taps which can only read zero padding.

    With padding = dilation = ``d`` and an input no taller (wider) than ``d``,
    the outer kernel rows (columns) of every output position fall in the
    padding, so the output is the one of the centre row (column) alone: the
    same numbers for a fraction of the work (the ASPP rates 12/24/36 on the
    3x3 to 6x6 feature maps of small CPU crops, where the dense form costs
    about 40 % of a training step). The parameter is the full 3x3 kernel, so
    state dicts are unchanged; the skipped taps get the zero gradient the
    dense convolution gives them.

    >>> conv = AtrousConv2d(4, 2, 3, padding=12, dilation=12, bias=False)
    >>> x = torch.randn(1, 4, 5, 5)
    >>> dense = F.conv2d(x, conv.weight, None, 1, 12, 12)
    >>> bool(torch.allclose(conv(x), dense, atol=1e-6))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (dh, dw), (ph, pw) = self.dilation, self.padding
        rows = self.kernel_size[0] == 3 and ph == dh and x.shape[-2] <= dh
        cols = self.kernel_size[1] == 3 and pw == dw and x.shape[-1] <= dw
        if self.stride != (1, 1) or self.padding_mode != "zeros" or not (rows or cols):
            return super().forward(x)
        weight = self.weight
        if rows:
            weight, ph = weight[:, :, 1:2], 0
        if cols:
            weight, pw = weight[:, :, :, 1:2], 0
        return F.conv2d(x, weight, self.bias, 1, (ph, pw), self.dilation, self.groups)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 convolution), torchvision names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = AtrousConv2d(planes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 trunk (no pooling head) returning layer3 and layer4 features."""

    def __init__(self, in_channels: int = 1, output_stride: int = 8) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        dilate = (False, True, True) if output_stride == 8 else (False, False, True)
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(256, 6, stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(512, 3, stride=2, dilate=dilate[2])

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:  # trade the stride for dilation, as torchvision's replace_stride_with_dilation
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       norm(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)


class ASPPPooling(nn.Sequential):
    """Image-level branch of ASPP: global pooling, 1x1 conv, upsampling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         norm(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017), rates 12, 24, 36."""

    def __init__(self, in_channels: int, rates: tuple[int, ...] = (12, 24, 36), out_channels: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                                   norm(out_channels), nn.ReLU())]
        for rate in rates:
            branches.append(nn.Sequential(
                AtrousConv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
                norm(out_channels), nn.ReLU()))
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
                                     norm(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


def deeplab_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """``classifier``: ASPP, 3x3 conv, norm, ReLU, 1x1 conv to the class logits."""
    return nn.Sequential(ASPP(in_channels), nn.Conv2d(256, 256, 3, padding=1, bias=False), norm(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))


def fcn_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """``aux_classifier`` on layer3 features (torchvision's FCNHead)."""
    inter = in_channels // 4
    return nn.Sequential(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), norm(inter), nn.ReLU(),
                         nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))


class DeepLabV3(nn.Module):
    """DeepLabv3-ResNet50 with GroupNorm; ``forward`` returns ``{"out": logits[, "aux": logits]}``.

    Logits are upsampled (bilinear) to the input size: shape (B, num_classes, H, W).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, output_stride: int = 8,
                 aux_loss: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.backbone = ResNet50Backbone(in_channels, output_stride)
        self.classifier = deeplab_head(2048, num_classes)
        self.aux_classifier = fcn_head(1024, num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        c3, c4 = self.backbone(x)
        out = {"out": F.interpolate(self.classifier(c4), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            out["aux"] = F.interpolate(self.aux_classifier(c3), size=size, mode="bilinear", align_corners=False)
        return out


def build_model(num_classes: int, *, output_stride: int = 8, in_channels: int = 1,
                aux_loss: bool = False, pretrained: str | os.PathLike | None = None) -> DeepLabV3:
    """Build the study's model; optionally initialise it from a local torchvision checkpoint."""
    model = DeepLabV3(num_classes, in_channels=in_channels, output_stride=output_stride, aux_loss=aux_loss)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with each checkpoint key."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reduced: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: {len(self.loaded)} tensors loaded ({len(self.reduced)} reduced to "
                f"{'the first input channel' if self.reduced else 'nothing'}), {len(self.skipped)} skipped, "
                f"{len(self.missing)} model tensors left at their initial values")


_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _unwrap(state: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(model: DeepLabV3, source: str | os.PathLike | dict[str, torch.Tensor], *,
                    require_backbone: bool = False) -> LoadReport:
    """Initialise ``model`` from a local torchvision ResNet-50 or DeepLabv3 state dict.

    * ResNet-50 ImageNet keys (``conv1.weight``, ``layer1.0.conv1.weight``, ...)
      map to ``backbone.*``; ``fc.*`` is ignored.
    * DeepLabv3 keys (``backbone.*``, ``classifier.*``, ``aux_classifier.*``)
      map by name; tensors whose shape differs (the last classifier layer when
      the class count differs) are skipped and reported.
    * The first convolution keeps the filters of the first input channel
      (``weight[:, :in_channels]``), as in the study.
    * BatchNorm running statistics are skipped (the model uses GroupNorm).
    """
    label = "state dict" if isinstance(source, dict) else str(source)
    if isinstance(source, dict):
        state = _unwrap(source, label)
    else:
        if not os.path.isfile(source):
            raise InputError(f"{source}: pretrained checkpoint not found")
        try:
            raw = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is an input problem
            raise InputError(f"{source}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
        state = _unwrap(raw, label)
    is_resnet = not any(k.startswith(("backbone.", "classifier.")) for k in state)
    report = LoadReport(label)
    target = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"backbone.{key}" if is_resnet else key
        if is_resnet and key.startswith("fc."):
            report.skipped[key] = "ImageNet classifier (fc) not used"
            continue
        if key.rsplit(".", 1)[-1] in _BN_STATS:
            report.skipped[key] = "BatchNorm running statistic (model uses GroupNorm)"
            continue
        if name not in target:
            report.skipped[key] = "no such parameter in the model"
            continue
        want = target[name].shape
        if name == "backbone.conv1.weight" and value.ndim == 4 and value.shape[1] != want[1] \
                and value.shape[1] >= want[1] and value.shape[0] == want[0]:
            value = value[:, : want[1]].clone()
            report.reduced.append(key)
        if value.shape != want:
            report.skipped[key] = f"shape {tuple(value.shape)} differs from the model's {tuple(want)}"
            continue
        new[name] = value.to(target[name].dtype)
        report.loaded.append(key)
    if not new:
        raise InputError(f"{label}: no tensor matches a ResNet-50 or DeepLabv3 parameter name")
    if require_backbone:
        absent = [k for k in target if k.startswith("backbone.") and k not in new]
        if absent:
            raise InputError(f"{label}: not a ResNet-50 state dict ({len(absent)} backbone tensors missing or of "
                             f"another shape, e.g. {absent[0]})")
    model.load_state_dict(new, strict=False)
    report.missing = sorted(set(target) - set(new))
    return report
