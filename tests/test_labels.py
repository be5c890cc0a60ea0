import json

import numpy as np
import pytest

from csaws_tools.classes import COMPLEMENTARY_CLASSES, class_names
from csaws_tools.errors import CsawsError
from csaws_tools.labels import LabelScheme, class_token, parse_scheme, scheme_ids, scheme_names

STD = class_names("standard")  # background, cancer, calcifications, ..., mammary_gland


def std_id(name):
    return STD.index(name)


def test_all_is_identity():
    s = parse_scheme("all")
    assert s.spec == "all" and s.num_classes == 12
    assert s.names == tuple(STD)
    assert s.lut.dtype == np.uint8 and s.lut.tolist() == list(range(12))
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(s.apply(labels), labels)


def test_binary():
    s = parse_scheme("binary")
    assert s.names == ("background", "cancer") and s.num_classes == 2
    expected = [0, 1] + [0] * 10
    assert s.lut.tolist() == expected


def test_leave_one_out_merges_class_into_background_and_renumbers():
    s = parse_scheme("leave-one-out:skin")
    assert s.spec == "leave-one-out:skin"
    assert "skin" not in s.names and s.num_classes == 11
    assert s.names[:2] == ("background", "cancer")
    assert s.lut[std_id("skin")] == 0
    # the classes after skin move up by one, consecutively
    kept = [c for c in STD if c != "skin"]
    assert list(s.names) == kept
    for name in kept:
        assert s.lut[std_id(name)] == kept.index(name)


def test_keep_orders_by_priority_and_normalises_spec():
    s = parse_scheme("keep:Nipple, skin ,cancer")
    assert s.spec == "keep:skin,nipple"
    assert s.names == ("background", "cancer", "skin", "nipple")
    lut = s.lut.tolist()
    assert lut[std_id("skin")] == 2 and lut[std_id("nipple")] == 3
    assert lut[std_id("mammary_gland")] == 0 and lut[std_id("calcifications")] == 0
    assert parse_scheme("keep:") .names == ("background", "cancer")


def test_random_is_deterministic_and_picks_k_complementary():
    a, b = parse_scheme("random:3:0"), parse_scheme("random:3:0")
    assert a == b and a.spec == "random:3:0"
    assert a.num_classes == 5 and a.names[:2] == ("background", "cancer")
    picked = a.names[2:]
    assert set(picked) <= set(COMPLEMENTARY_CLASSES)
    assert list(picked) == [c for c in COMPLEMENTARY_CLASSES if c in picked]  # priority order
    others = {parse_scheme(f"random:3:{seed}").names for seed in range(10)}
    assert len(others) > 1  # the seed matters
    assert parse_scheme("random:10:5").names == tuple(STD)
    assert parse_scheme("random:0:1").names == ("background", "cancer")


def test_merge_takes_higher_priority_position():
    s = parse_scheme("merge:thick_vessels+axillary_lymph_nodes=vessels_nodes")
    assert s.spec == "merge:axillary_lymph_nodes+thick_vessels=vessels_nodes"
    # lymph nodes (priority 3) are above thick vessels (4): the merged class sits at id 3
    assert s.names[:4] == ("background", "cancer", "calcifications", "vessels_nodes")
    assert s.lut[std_id("thick_vessels")] == 3 and s.lut[std_id("axillary_lymph_nodes")] == 3
    assert s.lut[std_id("foreign_object")] == 4
    assert s.num_classes == 11


def test_several_merges():
    s = parse_scheme("merge:skin+nipple=surface,pectoral muscle+Non-mammary tissue=outside")
    assert "surface" in s.names and "outside" in s.names and s.num_classes == 10
    assert s.lut[std_id("skin")] == s.lut[std_id("nipple")] == s.names.index("surface")
    assert s.lut[std_id("pectoral_muscle")] == s.lut[std_id("non-mammary_tissue")] == s.names.index("outside")
    assert s.names.index("outside") < s.names.index("mammary_gland")


def test_apply_any_shape_and_to_dict():
    s = parse_scheme("binary")
    labels = np.array([[[0, 1], [2, 11]]], dtype=np.uint8)
    assert s.apply(labels).tolist() == [[[0, 1], [0, 0]]]
    record = json.loads(json.dumps(s.to_dict()))
    assert record == {"spec": "binary", "names": ["background", "cancer"], "lut": [0, 1] + [0] * 10}
    with pytest.raises(CsawsError, match="outside"):
        s.apply(np.array([12]))


def test_passthrough():
    s = parse_scheme("keep:skin")
    assert parse_scheme(s) is s
    assert isinstance(s, LabelScheme)


@pytest.mark.parametrize("spec, match", [
    ("everything", "unknown label scheme"),
    ("leave-one-out:tumour", "unknown class 'tumour'.*skin"),
    ("leave-one-out:cancer", "cancer cannot be used"),
    ("leave-one-out:", "exactly one class"),
    ("keep:skin,background", "background cannot be used"),
    ("random:11:0", "k must be 0..10"),
    ("random:three:0", "random:<k>:<seed>"),
    ("merge:skin=x", "at least two"),
    ("merge:skin+nipple", "<a>\\+<b>=<name>"),
    ("merge:skin+nipple=a,nipple+text=b", "more than one merge"),
    ("merge:skin+nipple=text", "another class"),
    ("merge:skin+nipple=bad name!", "letters, digits"),
])
def test_bad_specs(spec, match):
    with pytest.raises(CsawsError, match=match) as info:
        parse_scheme(spec)
    assert "\n" not in str(info.value)


def test_bad_class_lists_valid_classes():
    with pytest.raises(CsawsError) as info:
        parse_scheme("keep:tumour")
    for c in COMPLEMENTARY_CLASSES:
        assert c in str(info.value)


def test_class_token_normalisation():
    assert class_token("Pectoral muscle") == "pectoral_muscle"
    assert class_token("NON-MAMMARY TISSUE") == "non-mammary_tissue"
    assert class_token("non_mammary_tissue") == "non-mammary_tissue"
    assert class_token("tumour") is None


def test_release_numbering_of_a_scheme():
    s = parse_scheme("all")
    assert scheme_ids(s, "release").tolist() == [11] + list(range(11))
    assert scheme_names(s, "release") == class_names("release")
    b = parse_scheme("binary")
    assert scheme_ids(b, "release").tolist() == [1, 0] + [1] * 10
    assert scheme_names(b, "release") == ["cancer", "background"]


# ---------------------------------------------------------------- labels.json (LabelSet)


def test_labelset_of_the_identity_scheme_is_the_class_table(tmp_path):
    from csaws_tools.masks.classes import class_ids, class_names
    from csaws_tools.masks.labelset import LabelSet

    for numbering in ("standard", "release"):
        labels = LabelSet.of("all", numbering)
        assert list(labels.names) == class_names(numbering)
        assert [r["id"] for r in labels.table()] == sorted(class_ids(numbering).values())
        assert "scheme" not in json.loads(labels.to_json())  # the identity scheme is not recorded


def test_labelset_round_trips_through_labels_json(tmp_path):
    from csaws_tools.masks.labelset import LabelSet

    written = LabelSet.of("merge:skin+nipple=outer", "release")
    path = written.write(tmp_path)
    assert path == tmp_path / "labels.json" and path.read_text().endswith("}\n")
    back = LabelSet.read(path)
    assert back.names == written.names and back.colours == written.colours
    assert back.numbering == "release" and back.scheme == written.scheme and back.path == path
    assert not back.is_standard and LabelSet.of().is_standard
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert LabelSet.find(tmp_path / "a" / "b", max_up=1) is None
    assert LabelSet.near(tmp_path / "a" / "b", max_up=2).names == written.names


def test_a_damaged_labels_json_is_one_error_naming_it(tmp_path):
    from csaws_tools.errors import CsawsError
    from csaws_tools.masks.labelset import LabelSet

    path = tmp_path / "labels.json"
    path.write_text('{"classes": [{"name": "a", "id": 0}, {"name": "b", "id": 2}]}')
    with pytest.raises(CsawsError, match="labels.json: not a labels.json written by merge-masks .*0..N-1"):
        LabelSet.read(path)
