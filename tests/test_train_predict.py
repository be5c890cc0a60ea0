"""csaws-train predict: sliding-window label maps of whole images by a trained run."""

from __future__ import annotations

import json
import os
import pathlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from csaws_tools.classes import class_names, palette  # noqa: E402
from csaws_tools.errors import InputError  # noqa: E402
from csaws_tools.png import read_png, write_png  # noqa: E402
from csaws_tools.train.augment import MEAN, STD, prepare_eval  # noqa: E402
from csaws_tools.train.predict import predict, predict_image, read_run, tile_starts, to_unit  # noqa: E402



@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one thread avoids thread start-up and contention costs on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PerPixel(torch.nn.Module):
    """A pure per-pixel function (one 1 x 1 convolution): tiling must not change its answer.

    Class k wins where the normalised intensity is nearest its centre c_k (logit 2 c_k x - c_k^2),
    centres spread over the normalised range of [0, 1] and shifted by ``seed``.
    """

    def __init__(self, num_classes: int, *, output_stride: int = 8, aux_loss: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, num_classes, 1)
        c = torch.linspace(-MEAN / STD, (1 - MEAN) / STD, num_classes) + 0.3 * seed
        with torch.no_grad():
            self.conv.weight.copy_((2 * c).view(-1, 1, 1, 1))
            self.conv.bias.copy_(-c * c)

    def forward(self, x):
        return {"out": self.conv(x)}


def per_pixel_builder(num_classes: int, *, output_stride: int = 8, aux_loss: bool = False) -> PerPixel:
    return PerPixel(num_classes)


class TilePosition(torch.nn.Module):
    """Logits that depend on where a pixel sits in its tile: overlapping tiles disagree."""

    def forward(self, x):
        w = x.shape[-1]
        ramp = torch.linspace(-1.5, 1.5, w).view(1, 1, 1, w)
        return torch.cat([torch.zeros_like(x), x + ramp, 0.5 * x - ramp], dim=1)


def naive_sliding_window(model, image01: np.ndarray, tile: int, stride: int) -> np.ndarray:
    """Reference: pad, run every tile alone, sum softmax over a full-size array, argmax."""
    h, w = image01.shape
    ys, xs = tile_starts(h, tile, stride), tile_starts(w, tile, stride)
    padded = np.zeros((ys[-1] + tile, xs[-1] + tile), np.float32)
    padded[:h, :w] = image01
    padded = (padded - MEAN) / STD
    acc = None
    for y in ys:
        for x in xs:
            t = torch.from_numpy(np.ascontiguousarray(padded[y:y + tile, x:x + tile]))[None, None]
            p = model(t).float().softmax(1)[0].numpy()
            if acc is None:
                acc = np.zeros((p.shape[0],) + padded.shape, np.float32)
            acc[:, y:y + tile, x:x + tile] += p
    return acc[:, :h, :w].argmax(0).astype(np.uint8)


def make_run(root: Path, *, scheme: str = "binary", crop: int = 64, model=None, wrap: bool = True,
             name: str = "best.pt") -> Path:
    """A run folder laid out as training writes it: config.json and best.pt."""
    from csaws_tools.labels import parse_scheme

    s = parse_scheme(scheme)
    root.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else PerPixel(s.num_classes)
    state = model.state_dict()
    ckpt = {"model": state, "iteration": 3, "settings_hash": "0" * 16, "num_classes": s.num_classes,
            "output_stride": 16, "aux_loss": False, "scheme": s.spec} if wrap else state
    torch.save(ckpt, root / name)
    config = {"settings_hash": "0" * 16, "scheme": s.to_dict(),
              "config": {"scheme": scheme, "output_stride": 16,
                         "augment": {"crop": crop, "mean": MEAN, "std": STD}}}
    (root / "config.json").write_text(json.dumps(config))
    return root


def mammogram_like(shape: tuple[int, int], seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 0.5 + 0.4 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + rng.normal(0, 0.05, shape)
    top = 255 if dtype == np.uint8 else 65535
    return (np.clip(img, 0, 1) * top).round().astype(dtype)


def test_map_of_an_image_not_a_multiple_of_the_tile_has_its_size_and_equals_whole_image_inference(tmp_path):
    img = mammogram_like((530, 700))  # 530 / 64 and 700 / 64 are not whole numbers
    model = PerPixel(3).eval()
    x = prepare_eval(torch.from_numpy(img)[None])
    with torch.no_grad():
        whole = model(x)["out"].argmax(1)[0].numpy().astype(np.uint8)
    assert len(np.unique(whole)) == 3  # the test means something: every class occurs
    for overlap, batch in ((0.0, 4), (0.25, 1), (0.5, 7)):
        labels, _ = predict_image(model, to_unit(img), tile=64, overlap=overlap, batch_size=batch)
        assert labels.shape == (530, 700) and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, whole, err_msg=f"overlap {overlap}, batch {batch}")
    assert predict_image(model, to_unit(img), tile=64, overlap=0.0)[1] == 9 * 11  # ceil(530/64) x ceil(700/64)
    small = img[:20, :30]  # smaller than one tile: padded, one tile
    labels, n = predict_image(model, to_unit(small), tile=64)
    assert n == 1 and labels.shape == (20, 30)
    np.testing.assert_array_equal(labels, whole[:20, :30])
    # the same through the batch command: a palette PNG of the image's size
    run = make_run(tmp_path / "run", scheme="keep:skin,nipple")  # 4 classes
    write_png(tmp_path / "img.png", img)
    res = predict(run, [tmp_path / "img.png"], tmp_path / "out", builder=per_pixel_builder, progress=False)
    assert res.exit_code == 0 and res.count("ok") == 1
    with Image.open(tmp_path / "out" / "img.png") as im:
        assert im.mode == "P" and im.size == (700, 530)
    assert read_png(tmp_path / "out" / "img.png").shape == (530, 700)


def test_overlapping_tiles_average_softmax_probabilities(tmp_path):
    model = TilePosition()
    img = to_unit(mammogram_like((101, 133), seed=3))
    for overlap, batch in ((0.5, 1), (0.5, 3), (0.3, 5), (0.75, 2), (0.75, 100)):
        stride = max(1, round(32 * (1 - overlap)))
        want = naive_sliding_window(model, img, 32, stride)
        got, _ = predict_image(model, img, tile=32, overlap=overlap, batch_size=batch, device="cpu")
        np.testing.assert_array_equal(got, want, err_msg=f"overlap {overlap}, batch {batch}")
    # and overlap changes the answer for such a model (averaging really happens)
    assert (predict_image(model, img, tile=32, overlap=0.0, device="cpu")[0]
            != predict_image(model, img, tile=32, overlap=0.5, device="cpu")[0]).any()


def test_tiles_are_normalised_as_training_crops_and_padded_with_black():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros((x.shape[0], 2) + x.shape[2:])

    img = mammogram_like((40, 70))
    predict_image(Recorder(), to_unit(img), tile=32, overlap=0.0, batch_size=8, device="cpu")
    tiles = torch.cat(seen)
    assert tiles.shape == (6, 1, 32, 32)  # 2 rows x 3 columns of tiles
    np.testing.assert_array_equal(tiles[0].numpy(), prepare_eval(torch.from_numpy(img[:32, :32])[None])[0].numpy())
    padded = np.zeros((64, 96), np.uint8)
    padded[:40, :70] = img
    np.testing.assert_array_equal(tiles[5].numpy(), prepare_eval(torch.from_numpy(padded[32:, 64:])[None])[0].numpy())
    # 16-bit images are scaled by 65535: the same picture in 16 bits gives the same input
    np.testing.assert_allclose(to_unit(img.astype(np.uint16) * 257), to_unit(img), atol=1e-7)


def test_rerun_skips_up_to_date_maps_and_redoes_edited_inputs_and_a_new_checkpoint(tmp_path):
    run = make_run(tmp_path / "run")
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    write_png(images / "a.png", mammogram_like((70, 90), 1))
    write_png(images / "sub" / "b.png", mammogram_like((50, 40), 2, np.uint16))
    write_png(images / "a_cancer.png", np.zeros((70, 90), np.uint8))  # a class mask beside its image
    kw: dict = {"builder": per_pixel_builder, "progress": False}
    first = predict(run, [images], tmp_path / "out", **kw)
    assert first.count("ok") == 2 and (tmp_path / "out" / "sub" / "b.png").is_file()
    assert not (tmp_path / "out" / "a_cancer.png").exists()
    before = (tmp_path / "out" / "a.png").stat().st_mtime_ns
    again = predict(run, [images], tmp_path / "out", **kw)
    assert again.count("skipped") == 2 and again.exit_code == 0
    assert (tmp_path / "out" / "a.png").stat().st_mtime_ns == before  # not rewritten
    # an edited input is redone, the other one is not
    write_png(images / "a.png", 255 - mammogram_like((70, 90), 1))
    st = (images / "a.png").stat()
    os.utime(images / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    edited = predict(run, [images], tmp_path / "out", **kw)
    status = {Path(r["source"]).name: r["status"] for r in edited.rows}
    assert status == {"a.png": "ok", "b.png": "skipped"}
    # another checkpoint (retrained weights) redoes every map
    make_run(tmp_path / "run", model=PerPixel(2, seed=1))
    assert predict(run, [images], tmp_path / "out", **kw).count("ok") == 2
    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(frame["status"]) == {"ok"} and {"px_background", "px_cancer"} <= set(frame.columns)


class Payload:
    """Pickled, it would create ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path):
    # the payload is live: unpickled the unsafe way it does create its marker
    torch.save({"model": Payload(tmp_path / "proof")}, tmp_path / "proof.pt")
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert (tmp_path / "proof").exists()

    run = make_run(tmp_path / "run")
    marker = tmp_path / "marker"
    torch.save({"model": Payload(marker), "num_classes": 2}, run / "best.pt")
    write_png(tmp_path / "img.png", mammogram_like((40, 40)))
    with pytest.raises(InputError, match=r"best\.pt: refused: not a plain weights file"):
        predict(run, [tmp_path / "img.png"], tmp_path / "out", builder=per_pixel_builder, progress=False)
    result = CliRunner().invoke(_cli(), ["predict", str(run), str(tmp_path / "img.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "best.pt" in lines[0]
    assert not marker.exists()
    torch.save(Payload(marker), run / "best.pt")  # the bare object, not in a dict
    with pytest.raises(InputError, match="refused"):
        read_run(run)
    assert not marker.exists()


def test_a_bare_state_dict_is_a_checkpoint_too_and_other_weights_are_one_line_errors(tmp_path):
    img = mammogram_like((45, 77))
    write_png(tmp_path / "img.png", img)
    model = PerPixel(2)
    wrapped = make_run(tmp_path / "wrapped", model=model)
    bare = make_run(tmp_path / "bare", model=model, wrap=False)
    for run in (wrapped, bare):
        assert predict(run, [tmp_path / "img.png"], tmp_path / run.name, builder=per_pixel_builder,
                       progress=False).exit_code == 0
    np.testing.assert_array_equal(read_png(tmp_path / "wrapped" / "img.png"), read_png(tmp_path / "bare" / "img.png"))
    # per-pixel weights are not the study's DeepLabv3
    with pytest.raises(InputError, match=r"best\.pt: weights do not fit the run's model"):
        predict(wrapped, [tmp_path / "img.png"], tmp_path / "x", progress=False)
    (wrapped / "best.pt").unlink()
    with pytest.raises(InputError, match="no selected checkpoint"):
        read_run(wrapped)
    make_run(wrapped, model=model, name="last.pt")
    assert read_run(wrapped, checkpoint="last.pt")[0].checkpoint.endswith("last.pt")


def test_maps_use_the_runs_numbering_with_labels_json_and_overlays(tmp_path):
    run = make_run(tmp_path / "run", scheme="all", crop=48)
    write_png(tmp_path / "img.png", mammogram_like((100, 150), 4, np.uint16))
    res = predict(run, [tmp_path / "img.png"], tmp_path / "out", overlay_dir=tmp_path / "ov",
                  builder=per_pixel_builder, progress=False)
    assert res.exit_code == 0
    doc = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert [c["name"] for c in sorted(doc["classes"], key=lambda c: c["id"])] == class_names("standard")
    with Image.open(tmp_path / "out" / "img.png") as im:
        pal = np.asarray(im.getpalette()[: 3 * 12]).reshape(12, 3)
    np.testing.assert_array_equal(pal, np.asarray(palette("standard")))
    labels = read_png(tmp_path / "out" / "img.png")
    assert labels.max() < 12 and len(np.unique(labels)) > 1
    ov = read_png(tmp_path / "ov" / "img.png")
    assert ov.ndim == 3 and ov.shape[0] >= 100 and ov.shape[1] >= 150  # the image, plus preview's legend panel
    from csaws_tools.preview import overlay
    want = overlay(read_png(tmp_path / "img.png"), labels, names=class_names("standard"),
                   colours=palette("standard"), max_size=1024, title="img")
    np.testing.assert_array_equal(ov, want)


def _cli():
    from csaws_tools.cli.train import train

    return train


def test_cli_bad_images_are_one_error_row_each_the_batch_goes_on_and_exit_status_is_1(tmp_path, monkeypatch):
    """End to end with the study's DeepLabv3 (small tiles) through ``csaws-train predict``."""
    monkeypatch.delenv("CSAWS_MAX_PIXELS", raising=False)  # --max-pixels sets it; restored afterwards
    from csaws_tools.train.model import build_model

    run = make_run(tmp_path / "run", model=build_model(2, output_stride=16), crop=32)
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "good.png", mammogram_like((45, 50)))
    (images / "garbage.png").write_bytes(b"not a png at all")
    write_png(images / "map.png", np.zeros((20, 20), np.uint8), palette=[(0, 0, 0), (255, 0, 0)])
    write_png(images / "huge.png", mammogram_like((60, 60)))
    result = CliRunner().invoke(_cli(), ["predict", str(run), str(images), str(tmp_path / "missing.png"),
                                         "-o", str(tmp_path / "out"), "--max-pixels", "3000", "--no-progress"])
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 4
    for name in ("garbage.png", "map.png", "huge.png", "missing.png"):
        assert sum(name in ln for ln in errors) == 1
    assert "1 converted, 0 skipped, 4 failed" in result.output
    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    frame.index = [Path(s).stem for s in frame["source"]]
    assert frame.loc["good", "status"] == "ok" and frame.loc["good", "tiles"] == 4
    assert "not a PNG" in frame.loc["garbage", "error"] and "palette" in frame.loc["map", "error"]
    assert "limit" in frame.loc["huge", "error"]
    assert read_png(tmp_path / "out" / "good.png").shape == (45, 50)
    assert not (tmp_path / "out" / "garbage.png").exists()
    help_text = CliRunner().invoke(_cli(), ["predict", "--help"]).output
    for option in ("--overlap", "--tile", "--batch-size", "--overlay", "--checkpoint", "--workers"):
        assert option in help_text


def test_worker_processes_give_the_same_maps_as_one_process(tmp_path):
    run = make_run(tmp_path / "run", scheme="keep:skin", crop=32)
    for k in range(3):
        write_png(tmp_path / "images" / f"i{k}.png", mammogram_like((40 + 7 * k, 50), k))
    one = predict(run, [tmp_path / "images"], tmp_path / "one", builder=per_pixel_builder, progress=False)
    two = predict(run, [tmp_path / "images"], tmp_path / "two", builder=per_pixel_builder, progress=False,
                  workers=2, threads=1)
    assert one.count("ok") == two.count("ok") == 3
    for k in range(3):
        np.testing.assert_array_equal(read_png(tmp_path / "one" / f"i{k}.png"), read_png(tmp_path / "two" / f"i{k}.png"))
