"""The paper protocol as the authors' code runs it: augmentation, validation loss, selection, length,
initialisation, safe checkpoints and progress."""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from csaws_tools.errors import InputError, OutputError, SettingsError  # noqa: E402
from csaws_tools.train.augment import AugmentConfig, augment_batch, reflect_gaussian_matrix  # noqa: E402
from csaws_tools.train.loop import TrainConfig, load_checkpoint, load_selected, validate  # noqa: E402
from csaws_tools.train.model import IMAGENET_FILE, build_model, resolve_pretrained  # noqa: E402
from csaws_tools.train.progress import Progress  # noqa: E402
from csaws_tools.train.selection import select_checkpoint, sul_saves  # noqa: E402

torch.set_num_threads(2)


def _components(mask: torch.Tensor) -> torch.Tensor:
    """Number of 8-connected components of each (H, W) boolean mask in a (B, H, W) batch."""
    b, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(b, -1, -1).clone()
    lab = torch.where(mask, ids, torch.zeros_like(ids))
    while True:
        grown = torch.nn.functional.max_pool2d(lab[:, None], 3, 1, 1)[:, 0]
        grown = torch.where(mask, grown, torch.zeros_like(grown))
        if torch.equal(grown, lab):
            break
        lab = grown
    return torch.tensor([int(torch.unique(x[x > 0]).numel()) for x in lab])


def _disc_batch(n: int, size: int = 96, radius: float = 9.0):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - 47.5) ** 2 + (xx - 41.0) ** 2) <= radius**2
    img = torch.where(disc, 0.8, 0.3).expand(n, 1, size, size).clone()
    return img, disc.long().expand(n, size, size).clone(), int(disc.sum())


def _disc_outcomes(cfg: AugmentConfig, n: int = 200, seed: int = 0):
    img, mask, area = _disc_batch(n)
    _, m = augment_batch(img, mask, cfg, generator=torch.Generator().manual_seed(seed), normalise_output=False)
    lesion = m == 1
    edge = lesion[:, 0].any(1) | lesion[:, -1].any(1) | lesion[:, :, 0].any(1) | lesion[:, :, -1].any(1)
    inside = lesion.any((1, 2)) & ~edge
    return lesion, inside, area


def test_default_augmentation_keeps_a_disc_lesion_one_region_of_its_area():
    lesion, inside, area = _disc_outcomes(AugmentConfig(crop=64))
    assert inside.sum() >= 50  # enough renders where the lesion stays inside the crop
    comps = _components(lesion[inside])
    areas = lesion[inside].sum((1, 2)).float()
    assert (comps == 1).all(), comps.tolist()
    assert ((areas - area).abs() <= 0.3 * area).all(), (area, areas.min().item(), areas.max().item())


def test_literal_sigma_two_tears_the_lesion():
    """The paper's literal reading (sigma 2) fails the disc test: why the default follows the code."""
    lesion, inside, area = _disc_outcomes(AugmentConfig(crop=64, elastic_p=1.0, elastic_sigma=2.0), n=60)
    comps = _components(lesion[inside]) if inside.any() else torch.tensor([2])
    areas = lesion[inside].sum((1, 2)).float()
    assert (comps > 1).any() or ((areas - area).abs() > 0.3 * area).any()


def test_elastic_smoothing_is_scipy_reflect_gaussian_for_wide_kernels():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random((30, 30))
    for sigma in (2.0, 512.0):
        m = reflect_gaussian_matrix(30, sigma).double().numpy()
        np.testing.assert_allclose(m @ x @ m.T, scipy_ndimage.gaussian_filter(x, sigma, mode="reflect"), atol=1e-6)


def test_paper_flip_never_identity_and_rotation_half_the_time():
    # a crop with a unique corner marker: the output corner tells which D4 element was drawn
    n, s = 2000, 8
    img = torch.zeros(n, 1, s, s)
    mask = torch.zeros(n, s, s, dtype=torch.long)
    mask[:, 0, 0], mask[:, 0, 1] = 1, 2  # asymmetric: identifies every D4 element
    cfg = AugmentConfig(crop=s, elastic_p=0.0, brightness=0.0, contrast=0.0)
    _, m = augment_batch(img, mask, cfg, generator=torch.Generator().manual_seed(3))
    identity = (m == mask).all(2).all(1)
    # identity happens only as flip "both" after a 180-degree rotation: P = 1/3 * (1/2 * 1/4) = 1/24
    assert abs(identity.float().mean().item() - 1 / 24) < 0.02
    unrotated_flips = {"h": (m[:, 0, -1] == 1) & (m[:, 0, -2] == 2), "v": (m[:, -1, 0] == 1) & (m[:, -1, 1] == 2)}
    for hit in unrotated_flips.values():  # each plain flip: 1/3 * (1/2 + 1/8) + ... at least 1/3 * 5/8
        assert hit.float().mean().item() > 0.17


def test_sul_selection_rule_on_a_made_up_history():
    hist = [{"val_iou": v, "val_loss": l} for v, l in [
        (0.10, 1.0),   # 0: record, MA inf -> saved
        (0.05, 0.9),   # 1: no record
        (0.20, 0.8),   # 2: record, MA still inf -> saved
        (0.30, 0.7),   # 3: saved
        (0.25, 0.6),   # 4: MA(0..4) = 0.8 becomes the best MA; no record
        (0.40, 0.85),  # 5: record but loss 0.85 > best MA 0.8 -> not saved (record still counts)
        (0.35, 0.5),   # 6: not a record (0.40 stands)
        (0.45, 0.75),  # 7: record, but loss 0.75 > best MA 0.69 -> not saved
    ]]
    # MAs: k4 = 0.8, k5 = (0.9+0.8+0.7+0.6+0.85)/5 = 0.77, k6 = (0.8+0.7+0.6+0.85+0.5)/5 = 0.69
    flags = sul_saves(hist)
    assert flags == [True, False, True, True, False, False, False, False]
    assert select_checkpoint(hist, rule="sul") == 3
    hist.append({"val_iou": 0.5, "val_loss": 0.6})  # record, 0.6 <= 0.69 -> saved
    assert select_checkpoint(hist, rule="sul") == 8
    # the other rule picks differently on the same history
    assert select_checkpoint(hist, rule="smoothed-loss") != 3
    assert select_checkpoint([{"val_iou": float("nan"), "val_loss": 1.0}], rule="sul") is None


class _Const(torch.nn.Module):
    """Logits fixed per pixel: class 1 when the image is bright."""

    def forward(self, x):
        p = (x > 0).float()
        return {"out": torch.cat([(1 - p) * 2.0, p * 2.0, torch.zeros_like(p)], dim=1)}


def test_cancer_only_validation_loss(monkeypatch):
    from csaws_tools.train import loop

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 16, 16)).astype(np.uint8)
    msk = rng.integers(0, 3, (5, 16, 16)).astype(np.uint8)
    msk[0] = 0  # a tile without cancer
    monkeypatch.setattr(loop, "iter_crops", lambda path, lut, bs, rows=None: iter([(np.arange(5), img, msk)]))
    dev = torch.device("cpu")
    cancer = validate(_Const(), "val.h5", None, dev, loss="cancer", amp=False)
    every = validate(_Const(), "val.h5", None, dev, loss="all", amp=False)
    # by hand: logits (2, 0, 0) or (0, 2, 0); cross-entropy = log(e^2 + 2) - logit of the reference class
    pred = (img / 255.0 - 0.176) / 0.218 > 0
    logits = np.stack([np.where(pred, 0.0, 2.0), np.where(pred, 2.0, 0.0), np.zeros(pred.shape)])
    ce = math.log(math.exp(2) + 2) - np.take_along_axis(logits, msk[None].astype(int), 0)[0]
    assert cancer["val_loss"] == pytest.approx(ce[msk == 1].mean(), rel=1e-5)
    assert every["val_loss"] == pytest.approx(ce.mean(), rel=1e-5)
    assert cancer["val_iou"] == pytest.approx(((msk == 1) & pred).sum() / ((msk == 1) | pred).sum())
    # no cancer pixel anywhere: the cancer-only loss is undefined (NaN), not 0
    monkeypatch.setattr(loop, "iter_crops", lambda path, lut, bs, rows=None: iter([(np.arange(1), img[:1], msk[:1])]))
    assert math.isnan(validate(_Const(), "val.h5", None, dev, loss="cancer", amp=False)["val_loss"])


def test_epochs_to_iterations():
    cfg = TrainConfig("t.h5", "v.h5")
    assert cfg.epochs == 100 and cfg.iterations is None
    assert cfg.total_iterations(250) == math.ceil(100 * 250 / 12) == 2084
    assert TrainConfig("t.h5", "v.h5", epochs=2.5, batch_size=4).total_iterations(10) == 7
    assert TrainConfig("t.h5", "v.h5", iterations=37).total_iterations(250) == 37
    with pytest.raises(SettingsError):
        TrainConfig("t.h5", "v.h5", epochs=None, iterations=None)


def _resnet50_state() -> dict:
    """A synthetic torchvision ResNet-50 ImageNet state dict (torchvision's key format, RGB conv1, BN, fc)."""
    model = build_model(2, output_stride=16)
    out = {}
    for k, v in model.backbone.state_dict().items():
        if k == "conv1.weight":
            v = torch.randn(64, 3, 7, 7)
        out[k] = torch.randn_like(v) if v.is_floating_point() else v
        if ".bn" in k or k.startswith("bn1") or ".downsample.1" in k:
            stem = k.rsplit(".", 1)[0]
            out[f"{stem}.running_mean"] = torch.zeros(v.shape[0])
            out[f"{stem}.running_var"] = torch.ones(v.shape[0])
    out["fc.weight"] = torch.randn(1000, 2048)
    out["fc.bias"] = torch.zeros(1000)
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """A temporary TORCH_HOME and a download that always fails (no test touches the network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_pretrained_imagenet_offline_without_file_says_where_to_put_it(offline):
    with pytest.raises(SettingsError) as err:
        resolve_pretrained("imagenet")
    msg = str(err.value)
    assert "\n" not in msg and str(offline) in msg and IMAGENET_FILE in msg and "pretrained='none'" in msg
    assert resolve_pretrained("none") is None


def test_pretrained_imagenet_found_in_torch_hub_cache(offline):
    from csaws_tools.train.model import load_pretrained

    offline.mkdir(parents=True)
    state = _resnet50_state()
    torch.save(state, offline / IMAGENET_FILE)
    path = resolve_pretrained("imagenet")
    assert path == str(offline / IMAGENET_FILE)
    model = build_model(2, output_stride=16)
    report = load_pretrained(model, path, require_backbone=True)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"][:, :1])
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert "fc.weight" in report.skipped


def test_pretrained_of_another_architecture_is_a_one_line_error(tmp_path):
    from csaws_tools.train.model import load_pretrained

    state = {k: v for k, v in _resnet50_state().items() if not k.startswith("layer4")}  # e.g. a cut-down net
    state["layer1.0.conv1.weight"] = torch.randn(64, 64, 3, 3)
    bad = tmp_path / "resnet18ish.pth"
    torch.save(state, bad)
    with pytest.raises(InputError) as err:
        load_pretrained(build_model(2, output_stride=16), bad, require_backbone=True)
    assert str(bad) in str(err.value) and "not a ResNet-50" in str(err.value) and "\n" not in str(err.value)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def test_crafted_pickle_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker.txt"
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "best.pt", "wb") as fh:
        pickle.dump({"model": _Evil(str(marker)), "num_classes": 2, "output_stride": 16}, fh)
    (run / "last.pt").write_bytes((run / "best.pt").read_bytes())
    with pytest.raises(InputError) as err:
        load_selected(run)
    assert str(run / "best.pt") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError):
        load_checkpoint(run / "last.pt")
    assert not marker.exists()


def test_best_checkpoint_missing_keys_names_the_file(tmp_path):
    torch.save({"model": {}}, tmp_path / "best.pt")
    with pytest.raises(InputError, match=r"best\.pt: checkpoint lacks num_classes, output_stride"):
        load_selected(tmp_path)


def test_checkpoint_save_on_a_full_disk_is_a_one_line_error(tmp_path, monkeypatch):
    import errno

    from csaws_tools.train import loop

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match="No space left on device") as err:
        loop._save({"x": torch.zeros(1)}, tmp_path / "last.pt")
    assert "last.pt" in str(err.value)
    assert not list(tmp_path.iterdir())  # no partial file left


def test_progress_lines_when_not_a_terminal():

    stream = io.StringIO()
    bar = Progress("with/n25/rep0", 0, 10, stream=stream, interval=0.0)
    for i in range(1, 4):
        bar.update(i)
    bar.note("val_iou 0.1000")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in stream.getvalue()
    assert lines[0].startswith("with/n25/rep0: it 1/10") and "it/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].endswith("| val_iou 0.1000")
    quiet = io.StringIO()
    bar = Progress("x", 0, 10, stream=quiet, interval=30.0)
    for i in range(1, 10):
        bar.update(i)
    assert quiet.getvalue() == ""  # nothing before the interval has passed


def test_a_bad_progress_interval_falls_back_to_30_seconds_instead_of_failing_the_run(monkeypatch):
    monkeypatch.setenv("CSAWS_PROGRESS_INTERVAL", "soon")
    bar = Progress("x", 0, 10, stream=io.StringIO())
    assert bar.interval == 30.0
    monkeypatch.setenv("CSAWS_PROGRESS_INTERVAL", "2.5")
    assert Progress("x", 0, 10, stream=io.StringIO()).interval == 2.5


def test_progress_to_a_closed_stream_does_not_fail_the_run():
    stream = io.StringIO()
    bar = Progress("x", 0, 10, stream=stream, interval=0.0)
    stream.close()
    bar.update(1)
    bar.note("val_iou 0.1")
    bar.close()


def test_sul_schedule_follows_the_authors_multisteplr_stepped_every_100_iterations():
    from csaws_tools.train.loop import lr_lambda

    # SUL (src/trainer.py): MultiStepLR(milestones=[1000, 2000]), stepped after iteration 1 and
    # after every 100th iteration (log_every); iteration i trains with the rate set before it.
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sul = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1000, 2000])
    ours = lr_lambda("sul", 250_000)
    for i in range(1, 250_001):
        assert math.isclose(opt.param_groups[0]["lr"], ours(i - 1), rel_tol=1e-9), i
        if i == 1 or i % 100 == 0:
            sul.step()
    assert ours(99_899) == 1.0 and ours(99_900) == 0.1 and ours(199_900) == 0.01


def test_the_sul_schedule_is_the_default_and_keeps_the_hash_of_runs_it_leaves_constant():
    from click.testing import CliRunner

    from csaws_tools.cli.train import PROTOCOL_DEFAULTS, train

    cfg = TrainConfig("a/train_rep0.h5", "a/val_tiles.h5")
    assert cfg.schedule == "sul" and PROTOCOL_DEFAULTS["paper"]["schedule"] == "sul"
    assert PROTOCOL_DEFAULTS["earlier"]["schedule"] == "constant"
    # below iteration 99,900 the rate never drops: such runs hash as 'constant' runs did
    assert cfg.settings() == TrainConfig("a/train_rep0.h5", "a/val_tiles.h5", schedule="constant").settings()
    help_text = CliRunner().invoke(train, ["run", "--help"]).output
    assert "99,900" in help_text and "sul" in help_text


def test_a_short_checkpoint_write_reported_by_torch_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch):
    from csaws_tools.train import loop

    def short(obj, path):  # what torch's zip writer raises when the disk fills during a save
        Path(path).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 350883968 vs 350883860")

    monkeypatch.setattr(torch, "save", short)
    with pytest.raises(OutputError, match=r"last\.pt: cannot write the checkpoint: the write came out short "
                                          r"\(disk full\? [0-9.]+ GiB free there now; torch: .*unexpected pos") as err:
        loop._save({"x": torch.zeros(1)}, tmp_path / "last.pt")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # the partial temporary is removed, no last.pt appears

    def other(obj, path):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", other)
    with pytest.raises(RuntimeError, match="something else"):  # other errors are not disguised as a full disk
        loop._save({"x": torch.zeros(1)}, tmp_path / "last.pt")
