"""Patient-level splits and training subsets (protocol sections 1 and 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from csaws_tools.errors import InputError
from csaws_tools.png import write_png
from csaws_tools.splits import (
    PROTOCOL_VAL_PATIENTS,
    find_images,
    load_splits,
    make_splits,
    patient_of,
    save_splits,
    select_images,
)


def ids_for(patients, rng):
    """1 to 4 images per patient, like the release."""
    return [f"{p}_{n}" for p in patients for n in range(1, int(rng.integers(1, 5)) + 1)]


@pytest.fixture(scope="module")
def full_ids():
    """150 patients including the protocol's 20 validation patients."""
    rng = np.random.default_rng(0)
    others = [f"{i:03d}" for i in range(300) if f"{i:03d}" not in PROTOCOL_VAL_PATIENTS][:130]
    return ids_for(sorted(others + list(PROTOCOL_VAL_PATIENTS)), rng)


def check_patient_level(s, all_ids):
    train_p, val_p = set(s["train"]["patients"]), set(s["val"]["patients"])
    assert not train_p & val_p
    assert sorted(s["train"]["images"] + s["val"]["images"]) == sorted(all_ids)
    for part in ("train", "val"):
        assert {patient_of(i) for i in s[part]["images"]} == set(s[part]["patients"])
    by_patient = {}
    for i in all_ids:
        by_patient.setdefault(patient_of(i), set()).add(i)
    for n, reps in s["subsets"].items():
        for rep in reps.values():
            assert set(rep["patients"]) <= train_p
            # whole patients: every image of a chosen patient, nothing else
            assert set(rep["images"]) == set().union(*(by_patient[p] for p in rep["patients"]))
            assert rep["n_images"] == len(rep["images"]) <= int(n)


def test_protocol_validation_patients_and_subsets(full_ids):
    s = make_splits(full_ids, sizes=(25, 50, 100), repetitions=5, seed=0)
    assert s["validation"]["rule"] == "protocol"
    assert s["val"]["patients"] == sorted(PROTOCOL_VAL_PATIENTS)
    assert len(s["train"]["patients"]) == 130
    check_patient_level(s, full_ids)
    for n in ("25", "50", "100"):
        assert len(s["subsets"][n]) == 5
        sizes = [r["n_images"] for r in s["subsets"][n].values()]
        assert sizes == [int(n)] * 5  # with 1-4 images per patient, whole patients fill N exactly
        assert len({tuple(r["patients"]) for r in s["subsets"][n].values()}) == 5  # repetitions differ
        assert all(isinstance(r["seed"], int) for r in s["subsets"][n].values())
    # The whole training set is a valid size.
    n_train = len(s["train"]["images"])
    s_all = make_splits(full_ids, sizes=(n_train,), repetitions=1)
    assert s_all["subsets"][str(n_train)]["0"]["images"] == sorted(s["train"]["images"])


def test_deterministic_and_seeded(full_ids):
    a = make_splits(full_ids, sizes=(25,), repetitions=2, seed=1)
    b = make_splits(list(reversed(full_ids)), sizes=(25,), repetitions=2, seed=1)
    c = make_splits(full_ids, sizes=(25,), repetitions=2, seed=2)
    assert a == b
    assert a["subsets"]["25"]["0"]["patients"] != c["subsets"]["25"]["0"]["patients"]


def test_seeded_fraction_without_protocol_patients():
    rng = np.random.default_rng(1)
    ids = ids_for([f"p{i:02d}" for i in range(30)], rng)
    s = make_splits(ids, sizes=(5,), repetitions=3, seed=0)
    assert s["validation"]["rule"] == "seeded-fraction" and s["validation"]["seed"] is not None
    assert len(s["val"]["patients"]) == round(30 * 20 / 150)
    check_patient_level(s, ids)
    assert make_splits(ids, sizes=(5,), repetitions=3, seed=0) == s
    assert make_splits(ids, sizes=(5,), repetitions=3, seed=5)["val"] != s["val"]


def test_given_validation_patients_and_errors():
    ids = ["a_1", "a_2", "b_1", "c_1", "c_2", "d_1"]
    s = make_splits(ids, val_patients=["b"], sizes=(2,), repetitions=1)
    assert s["val"]["images"] == ["b_1"] and s["validation"]["rule"] == "given"
    with pytest.raises(InputError, match="validation patients x have no image"):
        make_splits(ids, val_patients=["x"], sizes=(2,))
    with pytest.raises(InputError, match=r"subset size 9 exceeds the 5 training images \(3 patients\)"):
        make_splits(ids, val_patients=["b"], sizes=(2, 9))
    with pytest.raises(InputError, match="every patient is in the validation split"):
        make_splits(ids, val_patients=["a", "b", "c", "d"], sizes=(1,))
    with pytest.raises(InputError, match="at least 2 patients"):
        make_splits(["a_1", "a_2"], sizes=(1,))
    with pytest.raises(InputError, match="no image ids"):
        make_splits([], sizes=(1,))


def test_unreachable_size_warns_and_stays_below():
    ids = ["a_1", "a_2", "b_1", "b_2", "c_1", "c_2", "v_1"]
    with pytest.warns(UserWarning, match="N=5 repetition 0: 4 images"):
        s = make_splits(ids, val_patients=["v"], sizes=(5,), repetitions=1)
    assert s["subsets"]["5"]["0"]["n_images"] == 4


def test_patient_in_trainval_and_test_is_warned_and_recorded():
    ids = ["a_1", "a_2", "b_1", "c_1", "v_1"]
    with pytest.warns(UserWarning, match="patient\\(s\\) a have images both in train/val and in test"):
        s = make_splits(ids, val_patients=["v"], sizes=(1,), repetitions=1, test_ids=["a_3", "t_1"])
    assert s["test"]["shared_patients"] == ["a"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = make_splits(ids, val_patients=["v"], sizes=(1,), repetitions=1, test_ids=["t_1"])
    assert clean["test"]["shared_patients"] == []


def test_save_load_select(tmp_path):
    ids = [f"{p}_{n}" for p in ("000", "001", "100", "101", "102", "103") for n in (1, 2)]
    s = make_splits(ids, sizes=(2, 4), repetitions=2, test_ids=["900_1"])
    path = save_splits(s, tmp_path / "s.json")
    loaded = load_splits(path)
    assert loaded == json.loads(json.dumps(s))
    assert s["val"]["patients"] == ["000", "001"]  # the protocol's patients that are present
    assert select_images(path, "val") == ["000_1", "000_2", "001_1", "001_2"]
    assert select_images(loaded, "test") == ["900_1"]
    assert select_images(loaded, "4", 1) == loaded["subsets"]["4"]["1"]["images"]
    assert sorted(select_images(loaded, "trainval")) == sorted(ids)
    with pytest.raises(InputError, match="no repetition 7"):
        select_images(loaded, "4", 7)
    with pytest.raises(InputError, match="unknown split 'foo'"):
        select_images(loaded, "foo")
    loaded["test"]["images"] = []
    with pytest.raises(InputError, match="holds no images"):
        select_images(loaded, "test")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a splits file"):
        load_splits(tmp_path / "bad.json")


def test_find_images_release_layout_and_release_subsets(tmp_path):
    px = np.zeros((4, 4), np.uint8)
    base = tmp_path / "CsawS"
    for pid, ns in {"000": (1, 2), "002": (1,), "003": (4, 5), "004": (1,)}.items():
        for n in ns:
            write_png(base / "anonymized_dataset" / pid / f"{pid}_{n}.png", px)
            write_png(base / "anonymized_dataset" / pid / f"{pid}_{n}_non-mammary_tissue.png", px)
    write_png(base / "test_data" / "anonymized_dataset" / "009" / "009_1.png", px)
    write_png(base / "test_data" / "annotator_1" / "009" / "009_1_cancer.png", px)
    trainval, test = find_images(tmp_path)
    assert trainval == ["000_1", "000_2", "002_1", "003_4", "003_5", "004_1"]
    assert test == ["009_1"]
    (base / "training_random_splits.json").write_text(json.dumps({"3": {"0": ["002", "003"], "1": [4, "003"]}}))
    s = make_splits(tmp_path, release_subsets=True)
    assert s["subset_rule"]["source"] == "release" and s["val"]["patients"] == ["000"]
    assert s["subsets"]["3"]["1"]["images"] == ["003_4", "003_5", "004_1"]  # 4 -> "004"
    (base / "training_random_splits.json").write_text(json.dumps({"3": {"0": ["777"]}}))
    with pytest.raises(InputError, match="names patient '777'"):
        make_splits(tmp_path, release_subsets=True)


def test_cli_splits(tmp_path):
    from csaws_tools.cli import main

    px = np.zeros((4, 4), np.uint8)
    for pid in ("010", "011", "012", "013", "014"):
        for n in (1, 2):
            write_png(tmp_path / "img" / f"{pid}_{n}.png", px)
    runner = CliRunner()
    res = runner.invoke(main, ["splits", str(tmp_path / "img"), "-o", str(tmp_path / "s.json"),
                               "--sizes", "2,4", "--repetitions", "3", "--seed", "4"])
    assert res.exit_code == 0, res.output
    data = load_splits(tmp_path / "s.json")
    assert data["seed"] == 4 and set(data["subsets"]) == {"2", "4"} and len(data["subsets"]["4"]) == 3
    res = runner.invoke(main, ["splits", str(tmp_path / "img"), "-o", str(tmp_path / "t.json")])
    assert res.exit_code == 2 and "subset size 25 exceeds the 8 training images" in res.output
    assert "--sizes" in res.output
