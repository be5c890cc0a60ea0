"""Unit tests of the training module: metrics, CIs, selection, augmentation, model, weight loading."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csaws_tools.errors import SettingsError

torch = pytest.importorskip("torch")

from csaws_tools.errors import InputError  # noqa: E402
from csaws_tools.train.augment import AugmentConfig, augment_batch, smooth  # noqa: E402
from csaws_tools.train.metrics import (Confusion, confusion, iou, mean_ci, relative_gain, t_cdf,  # noqa: E402
                                       t_quantile)
from csaws_tools.train.model import build_model, load_pretrained  # noqa: E402
from csaws_tools.train.selection import eligible, moving_average, select_checkpoint  # noqa: E402

torch.set_num_threads(2)


# ---------------------------------------------------------------- IoU
def test_iou_against_hand_counts():
    pred = np.array([[1, 1, 0, 0],
                     [1, 2, 0, 1],
                     [0, 0, 0, 0]])
    ref = np.array([[1, 0, 0, 0],
                    [1, 1, 0, 0],
                    [1, 0, 3, 0]])
    c = confusion(pred, ref)
    # cancer (1): tp at (0,0),(1,0); fp at (0,1),(1,3); fn at (1,1),(2,0)
    assert (c.tp, c.fp, c.fn, c.total) == (2, 2, 2, 12)
    assert iou(pred, ref) == pytest.approx(2 / 6)
    assert confusion(torch.from_numpy(pred), torch.from_numpy(ref)) == c
    # counts add up over images; empty union is NaN, not 0 or 1
    both = c + confusion(np.zeros((2, 2)), np.ones((2, 2)))
    assert (both.tp, both.fp, both.fn) == (2, 2, 6)
    assert math.isnan(Confusion().iou)
    assert confusion(pred, ref, cls=2) == Confusion(0, 1, 0, 12)


# ---------------------------------------------------------------- confidence intervals
@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (10, 2.228),
                                         (30, 2.042), (120, 1.980)])
def test_t_quantile_matches_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_other_levels_and_symmetry():
    assert t_quantile(0.995, 4) == pytest.approx(4.604, abs=1e-3)
    assert t_quantile(0.95, 9) == pytest.approx(1.833, abs=1e-3)
    assert t_quantile(0.025, 4) == pytest.approx(-2.776, abs=1e-3)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.95996, abs=1e-4)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi


def test_mean_ci_known_computation():
    vals = [0.30, 0.35, 0.28, 0.40, 0.32]
    ci = mean_ci(vals)
    # mean 0.33, squared deviations sum to 0.0088, s^2 = 0.0022, t_{0.975,4} = 2.776445 (t table)
    half = 2.776445 * math.sqrt(0.0022) / math.sqrt(5)
    assert ci.mean == pytest.approx(0.33)
    assert ci.low == pytest.approx(0.33 - half, abs=1e-6)
    assert ci.high == pytest.approx(0.33 + half, abs=1e-6)
    assert ci.n == 5
    one = mean_ci([0.5, float("nan")])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low)


def test_relative_gain():
    assert relative_gain(0.33, 0.21) == pytest.approx(0.5714, abs=1e-4)
    assert math.isnan(relative_gain(0.3, 0.0))


# ---------------------------------------------------------------- checkpoint selection
def test_moving_average_trailing_window():
    assert moving_average([5, 3, 1, 3, 3, 9], 5) == pytest.approx([5, 4, 3, 3, 3, 19 / 5])


def test_selection_on_made_up_history():
    # validation loss falls, then rises (over-fitting) while IoU keeps creeping up
    losses = [1.00, 0.80, 0.70, 0.65, 0.60, 0.62, 0.70, 0.85, 1.00, 1.20]
    ious = [0.05, 0.10, 0.20, 0.26, 0.30, 0.29, 0.31, 0.33, 0.35, 0.36]
    hist = [{"val_loss": l, "val_iou": i} for l, i in zip(losses, ious)]
    ma = moving_average(losses)
    # ma: 1.0, .9, .8333, .7875, .75, .674, .654, .684, .754, .874 (by hand)
    assert ma == pytest.approx([1.0, 0.9, 2.5 / 3, 0.7875, 0.75, 0.674, 0.654, 0.684, 0.754, 0.874])
    flags = eligible(losses)
    # the best smoothed loss is .654; eligible up to 1.05 * .654 = .6867
    assert flags == [True] * 8 + [False, False]
    # the highest IoUs (validations 8, 9) come after the smoothed loss rose: vetoed; 7 has the best IoU left
    assert select_checkpoint(hist) == 7
    # without the loss veto (huge tolerance) the highest IoU wins
    assert select_checkpoint(hist, tolerance=10.0) == 9
    # ties in IoU go to the lower smoothed loss
    tie = [{"val_loss": 1.0, "val_iou": 0.2}, {"val_loss": 0.9, "val_iou": 0.2}, {"val_loss": 0.95, "val_iou": 0.1}]
    assert select_checkpoint(tie) == 1
    # NaN IoU counts as 0, empty history selects nothing
    assert select_checkpoint([{"val_loss": 1.0, "val_iou": float("nan")}, {"val_loss": 1.0, "val_iou": 0.01}]) == 1
    assert select_checkpoint([]) is None


def test_selection_is_online():
    """Choosing at each validation gives the same answer as choosing from the full history."""
    rng = np.random.default_rng(3)
    losses = (1.0 / np.arange(1, 31) + rng.normal(0, 0.05, 30) + np.linspace(0, 0.4, 30)).tolist()
    ious = np.clip(np.linspace(0, 0.5, 30) + rng.normal(0, 0.05, 30), 0, 1).tolist()
    hist = [{"val_loss": l, "val_iou": i} for l, i in zip(losses, ious)]
    online = None
    for k in range(1, len(hist) + 1):
        if select_checkpoint(hist[:k]) == k - 1:
            online = k - 1
    assert online == select_checkpoint(hist)


# ---------------------------------------------------------------- augmentation
def _smooth_batch(b=6, s=64):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
    imgs = []
    for k in range(b):
        imgs.append(0.5 + 0.3 * torch.sin((5 + k) * xx + k) * torch.cos((4 + k) * yy))
    img = torch.stack(imgs)[:, None]
    return img, (img[:, 0] > 0.5).long()


def _boundary(mask):
    m = mask.float()[:, None]
    return (torch.nn.functional.max_pool2d(m, 3, 1, 1) != -torch.nn.functional.max_pool2d(-m, 3, 1, 1))[:, 0]


def test_augmentation_keeps_image_and_mask_aligned():
    img, mask = _smooth_batch()
    g = torch.Generator().manual_seed(0)
    # geometric only (flips, rotations, crop): exact agreement
    cfg = AugmentConfig(crop=48, brightness=0, contrast=0, elastic_p=0.0)
    a, m = augment_batch(img, mask, cfg, generator=g, normalise_output=False)
    assert a.shape == (6, 1, 48, 48) and m.shape == (6, 48, 48) and m.dtype == torch.int64
    assert ((a[:, 0] > 0.5).long() == m).float().mean() >= 0.999
    # the crop really moved/rotated things: not simply the top-left crop
    assert not torch.equal(m, mask[:, :48, :48])
    # with the paper's literal elastic deformation (alpha 256, sigma 2) on every sample
    cfg = AugmentConfig(crop=48, brightness=0, contrast=0, elastic_p=1.0, elastic_sigma=2.0)
    a, m = augment_batch(img, mask, cfg, generator=g, normalise_output=False)
    agree = (a[:, 0] > 0.5).long() == m
    away = ~_boundary(m)
    assert agree[away].float().mean() >= 0.99
    assert agree.float().mean() >= 0.95
    # the deformation is real: the deformed mask differs from every undeformed D4 variant of a crop
    assert (m != mask[:, :48, :48]).float().mean() > 0.05


def test_augmentation_intensity_and_normalisation():
    img = torch.full((4, 1, 32, 32), 0.5)
    mask = torch.zeros(4, 32, 32, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    cfg = AugmentConfig(crop=32, elastic_p=0.0, brightness=0.1, contrast=0.1, protocol="independent")
    a, _ = augment_batch(img, mask, cfg, generator=g, normalise_output=False)
    shift = a.mean(dim=(1, 2, 3)) - 0.5
    assert (shift.abs() <= 0.1 + 1e-6).all() and shift.abs().max() > 0
    # paper protocol (SUL's RandomBrightnessContrast): x * a + b, a in 1 +- 0.1, b in +-0.1, half the crops untouched
    big = torch.full((400, 1, 8, 8), 0.5)
    a, _ = augment_batch(big, torch.zeros(400, 8, 8, dtype=torch.long), AugmentConfig(crop=8, elastic_p=0.0),
                         generator=g, normalise_output=False)
    shift = a.mean(dim=(1, 2, 3)) - 0.5
    assert (shift.abs() <= 0.05 + 0.1 + 1e-6).all()
    assert 0.4 < (shift == 0).float().mean() < 0.6
    a2, _ = augment_batch(img, mask, AugmentConfig(crop=32, elastic_p=0, brightness=0, contrast=0))
    assert torch.allclose(a2, torch.full_like(a2, (0.5 - 0.176) / 0.218))
    u8, _ = augment_batch((img * 255).to(torch.uint8)[:, 0], mask, AugmentConfig(crop=16), generator=g)
    assert u8.shape == (4, 1, 16, 16) and u8.dtype == torch.float32
    with pytest.raises(SettingsError, match="crop=64"):
        augment_batch(img, mask, AugmentConfig(crop=64))


def test_smoothing_preserves_constant_and_reduces_noise():
    f = torch.ones(1, 2, 20, 20)
    assert torch.allclose(smooth(f, 2.0), f, atol=1e-6)
    noise = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert smooth(noise, 2.0).std() < 0.25 * noise.std()


# ---------------------------------------------------------------- model
@pytest.mark.parametrize("classes,stride", [(2, 8), (12, 16)])
def test_model_output_shape(classes, stride):
    model = build_model(classes, output_stride=stride).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 40, 48))["out"]
    assert out.shape == (1, classes, 40, 48)


def test_model_strides_and_names():
    m8 = build_model(12, output_stride=8, aux_loss=True)
    m16 = build_model(2, output_stride=16)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        c3, c4 = m8.backbone(x)
        assert c4.shape[-1] == 8 and c3.shape[1] == 1024 and c4.shape[1] == 2048
        assert m16.backbone(x)[1].shape[-1] == 4
        assert m8(x)["aux"].shape == (1, 12, 64, 64)
    keys = set(m8.state_dict())
    for k in ("backbone.conv1.weight", "backbone.bn1.weight", "backbone.layer1.0.downsample.0.weight",
              "backbone.layer1.0.downsample.1.bias", "backbone.layer4.2.conv3.weight", "backbone.layer4.2.bn3.bias",
              "classifier.0.convs.0.0.weight", "classifier.0.convs.3.1.weight", "classifier.0.convs.4.1.weight",
              "classifier.0.project.0.weight", "classifier.1.weight", "classifier.2.weight", "classifier.4.bias",
              "aux_classifier.0.weight", "aux_classifier.4.weight"):
        assert k in keys, k
    assert isinstance(m8.backbone.layer2[0].bn2, torch.nn.GroupNorm) and m8.backbone.layer2[0].bn2.num_groups == 32
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m8.modules())
    # torchvision's deeplabv3_resnet50(aux_loss=True, num_classes=21) has 42,004,074 parameters;
    # GroupNorm has the same affine parameters as BatchNorm, one input channel removes 64*2*49
    n21 = sum(p.numel() for p in build_model(21, aux_loss=True).parameters())
    assert n21 == 42_004_074 - 64 * 2 * 49
    # layer4 dilations as torchvision's replace_stride_with_dilation
    assert m8.backbone.layer4[1].conv2.dilation == (4, 4) and m16.backbone.layer4[1].conv2.dilation == (2, 2)
    assert m8.backbone.layer3[0].conv2.stride == (1, 1) and m16.backbone.layer3[0].conv2.stride == (2, 2)


@pytest.mark.parametrize("size,dilation", [((3, 3), 12), ((6, 6), 6), ((4, 9), 4), ((9, 4), 4), ((5, 5), 2), ((7, 5), 6), ((5, 7), 6),
                                           ((1, 1), 1)])
def test_atrous_convolution_that_skips_padding_taps_equals_the_dense_one(size, dilation):
    """Output and weight/input gradients of the tap-skipping form equal the dense dilated convolution's."""
    from csaws_tools.train.model import AtrousConv2d

    torch.manual_seed(0)
    conv = AtrousConv2d(8, 5, 3, padding=dilation, dilation=dilation, bias=True).double()
    x = torch.randn(2, 8, *size, dtype=torch.double, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = conv.weight.detach().clone().requires_grad_(True)
    out = conv(x)
    ref = torch.nn.functional.conv2d(x_ref, w_ref, conv.bias, 1, dilation, dilation)
    assert out.shape == ref.shape == (2, 5, *size)
    assert torch.allclose(out, ref, atol=1e-12)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    assert torch.allclose(conv.weight.grad, w_ref.grad, atol=1e-12)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-12)
    # the skipped taps are exactly those the dense form gives no gradient
    if size[0] <= dilation and size[1] <= dilation:
        outer = w_ref.grad.clone()
        outer[:, :, 1, 1] = 0
        assert not outer.any() and not conv.weight.grad[:, :, [0, 2]].any()


def test_model_on_small_crops_gives_the_dense_convolutions_output(monkeypatch):
    """The whole model with tap skipping (48-px input: 3x3 and 6x6 feature maps) equals the dense model."""
    from csaws_tools.train import model as model_module

    torch.manual_seed(1)
    net = build_model(12, output_stride=16).double().eval()
    x = torch.randn(2, 1, 48, 48, dtype=torch.double)
    with torch.no_grad():
        fast = net(x)["out"]
        monkeypatch.setattr(model_module.AtrousConv2d, "forward", torch.nn.Conv2d.forward)
        dense = net(x)["out"]
    assert torch.allclose(fast, dense, atol=1e-9)
    assert isinstance(net.classifier[0].convs[1][0], model_module.AtrousConv2d)
    assert isinstance(net.backbone.layer4[0].conv2, model_module.AtrousConv2d)


def _bn_entries(prefix, c):
    return {f"{prefix}.weight": torch.rand(c), f"{prefix}.bias": torch.rand(c), f"{prefix}.running_mean": torch.rand(c),
            f"{prefix}.running_var": torch.rand(c), f"{prefix}.num_batches_tracked": torch.tensor(5)}


def test_load_torchvision_resnet50_state_dict(tmp_path):
    ref = build_model(12)
    state = {}
    for k, v in ref.backbone.state_dict().items():
        if k.endswith(".weight") and v.ndim == 1:  # a norm layer: write it as BatchNorm
            state.update(_bn_entries(k[: -len(".weight")], v.numel()))
        elif not k.endswith(".bias") or v.ndim != 1 or f"{k[:-5]}.weight" not in state:
            state[k] = torch.randn_like(v)
    state["conv1.weight"] = torch.randn(64, 3, 7, 7)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    model = build_model(2)
    report = load_pretrained(model, path)
    sd = model.state_dict()
    assert torch.equal(sd["backbone.conv1.weight"], state["conv1.weight"][:, :1])
    assert torch.equal(sd["backbone.layer3.5.conv2.weight"], state["layer3.5.conv2.weight"])
    assert torch.equal(sd["backbone.layer1.0.downsample.1.weight"], state["layer1.0.downsample.1.weight"])
    assert torch.equal(sd["backbone.bn1.bias"], state["bn1.bias"])
    assert report.reduced == ["conv1.weight"]
    assert "fc.weight" in report.skipped and "bn1.running_mean" in report.skipped
    assert not any(k.startswith("backbone.") for k in report.missing)
    assert all(k.startswith("classifier.") for k in report.missing)


def test_load_torchvision_deeplabv3_state_dict():
    src = build_model(21, aux_loss=True)
    state = {k: torch.randn_like(v) for k, v in src.state_dict().items()}
    state["backbone.conv1.weight"] = torch.randn(64, 3, 7, 7)
    state["classifier.2.running_mean"] = torch.zeros(256)
    model = build_model(12)
    report = load_pretrained(model, {"model": state})
    sd = model.state_dict()
    assert torch.equal(sd["classifier.0.convs.4.1.weight"], state["classifier.0.convs.4.1.weight"])
    assert torch.equal(sd["classifier.1.weight"], state["classifier.1.weight"])
    assert torch.equal(sd["backbone.conv1.weight"], state["backbone.conv1.weight"][:, :1])
    # 21 -> 12 classes: the last layer keeps its initial values and is reported
    assert "classifier.4.weight" in report.skipped and "classifier.4.weight" in report.missing
    assert "aux_classifier.0.weight" in report.skipped  # model has no aux head
    assert report.missing == ["classifier.4.bias", "classifier.4.weight"]
    with pytest.raises(InputError):
        load_pretrained(model, {"something.else": torch.zeros(3)})


def test_gradients_reach_every_parameter_and_steps_lower_the_loss():
    """Every parameter gets a finite, non-zero gradient, and Adam steps on a fixed batch lower the loss."""
    from csaws_tools.train.model import build_model

    torch.manual_seed(0)
    images = torch.zeros(2, 1, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    for k, (r, c) in enumerate(((10, 12), (30, 26))):
        images[k, 0, r:r + 24, c:c + 24] = 1.0
        masks[k, r:r + 24, c:c + 24] = 1
    model = build_model(2, output_stride=16)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(10):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images)["out"], masks)
        loss.backward()
        if step == 0:
            dead = [n for n, p in model.named_parameters()
                    if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
            assert not dead, dead
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
