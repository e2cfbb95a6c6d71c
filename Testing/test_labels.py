"""Tests of the lung label conventions (CTPerfusionMappingLib.labels)."""

from __future__ import annotations

import numpy as np
import pytest

from CTPerfusionMappingLib.labels import (
    REGION_LONG_NAMES,
    REGION_NAMES,
    THIRD_IDS,
    LungLabels,
    check_lung_labels,
    detect_source,
    lung_thirds,
    normalise_labels,
    region_kind,
    region_side,
)
from ImagingBasics.errors import UserError
from ImagingBasics.imageio import read_volume
from ImagingBasics.resample import resample_labels
from ImagingBasics.volume import Volume

# --- a constructed chest: right lung at low x index, left lung at high x index, superior = high k ---------------------
SHAPE = (24, 12, 30)  # z, y, x


def _lobes() -> np.ndarray:
    """CIP lobe ids on SHAPE: right lung x 2..13 (RLL k 2..9, RML 10..15, RUL 16..21), left x 16..27 (LLL 2..11, LUL 12..21)."""
    a = np.zeros(SHAPE, dtype=np.uint8)
    a[2:10, 2:10, 2:14] = 6
    a[10:16, 2:10, 2:14] = 5
    a[16:22, 2:10, 2:14] = 4
    a[2:12, 2:10, 16:28] = 8
    a[12:22, 2:10, 16:28] = 7
    return a


def _lungs_of(lobes: np.ndarray) -> np.ndarray:
    out = np.zeros(lobes.shape, dtype=np.uint8)
    out[np.isin(lobes, (4, 5, 6))] = 1
    out[np.isin(lobes, (7, 8))] = 2
    return out


def _encode(lobes: np.ndarray, table: dict, dtype=np.uint8) -> np.ndarray:
    """Write CIP lobe ids with another tool's values ``table = {cip id: tool value}``."""
    out = np.zeros(lobes.shape, dtype=dtype)
    for cip, value in table.items():
        out[lobes == cip] = value
    return out


def _vol(a: np.ndarray, **kw) -> Volume:
    return Volume(a, spacing=kw.get("spacing", (2.0, 2.0, 3.0)), origin=kw.get("origin", (-30.0, -12.0, -40.0)),
                  direction=kw.get("direction", np.eye(3)))


def _check_lobes(labels: LungLabels, lobes: np.ndarray) -> None:
    assert labels.kind == "lobes"
    assert labels.regions.array.dtype == np.uint8 and labels.lungs.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.regions.array, lobes)
    np.testing.assert_array_equal(labels.lungs.array, _lungs_of(lobes))


def _check_thirds_of(labels: LungLabels, lungs: np.ndarray) -> None:
    assert labels.kind == "thirds"
    np.testing.assert_array_equal(labels.lungs.array, lungs)
    np.testing.assert_array_equal(labels.regions.array, lung_thirds(labels.lungs).array)
    assert set(labels.region_ids) == set(THIRD_IDS)


# --- names and sides -------------------------------------------------------------------------------------
def test_region_names_sides_and_kinds():
    assert [REGION_NAMES[i] for i in (4, 5, 6, 7, 8)] == ["RUL", "RML", "RLL", "LUL", "LLL"]
    for rid in THIRD_IDS:
        assert "third" in REGION_NAMES[rid] and "lobe" not in REGION_NAMES[rid].lower()
        assert "third" in REGION_LONG_NAMES[rid] and region_kind(rid) == "third"
    assert [region_side(i) for i in (4, 5, 6, 12, 13, 14, 2)] == ["right"] * 7
    assert [region_side(i) for i in (7, 8, 9, 10, 11, 3)] == ["left"] * 6
    assert region_kind(4) == "lobe"
    with pytest.raises(ValueError):
        region_side(1)
    with pytest.raises(ValueError):
        region_side(0)


# --- every source -------------------------------------------------------------------------------------
def test_cip_lobes_with_types_in_high_byte():
    lobes = _lobes()
    a = lobes.astype(np.uint16)
    a[lobes == 4] |= 3 << 8  # vessel type in the RUL: stays RUL
    a[5, 5, 5] |= 2 << 8  # airway voxel inside the RLL
    a[0, 0, 0] = 2 << 8  # airway (trachea) with region 0: background
    a[23, 11, 29] = 3 << 8
    labels = normalise_labels(_vol(a), "cip")
    _check_lobes(labels, lobes)


def test_cip_thirds_and_left_right_lungs():
    lungs = _lungs_of(_lobes())
    thirds = lung_thirds(_vol(lungs)).array
    a = thirds.astype(np.uint16) | (1 << 8)  # type NormalParenchyma
    labels = normalise_labels(_vol(a), "cip")
    assert labels.kind == "thirds"
    np.testing.assert_array_equal(labels.regions.array, thirds)
    np.testing.assert_array_equal(labels.lungs.array, lungs)
    # CIP RightLung 2 / LeftLung 3: lungs known, regions are thirds
    cip_sides = np.where(lungs == 1, 2, np.where(lungs == 2, 3, 0)).astype(np.uint16)
    _check_thirds_of(normalise_labels(_vol(cip_sides), "cip"), lungs)


def test_cip_whole_lung_without_side_is_refused():
    whole = (_lungs_of(_lobes()) > 0).astype(np.uint16)
    with pytest.raises(UserError, match="left from right"):
        normalise_labels(_vol(whole), "cip")


@pytest.mark.parametrize(
    "source, table, others",
    [
        ("totalsegmentator", {7: 10, 8: 11, 4: 12, 5: 13, 6: 14}, (5, 15, 16, 117)),
        ("totalsegmentator_v1", {7: 13, 8: 14, 4: 15, 5: 16, 6: 17}, (1, 10, 12, 18, 104)),
        ("lungmask_ltrclobes", {7: 1, 8: 2, 4: 3, 5: 4, 6: 5}, ()),
    ],
)
def test_lobe_sources(source, table, others):
    lobes = _lobes()
    a = _encode(lobes, table)
    for n, value in enumerate(others):  # other organs outside the lungs are ignored
        a[0, n, :2] = value
        a[23, n, 28:] = value
    _check_lobes(normalise_labels(_vol(a), source), lobes)


def test_lungmask_r231_gives_thirds():
    lungs = _lungs_of(_lobes())
    _check_thirds_of(normalise_labels(_vol(lungs), "lungmask_r231"), lungs)


def test_user_mapping():
    lobes = _lobes()
    a = _encode(lobes, {4: 41, 5: 42, 6: 43, 7: 44, 8: 45})
    a[0, 0, 0] = 99  # not mapped: ignored
    mapping = {41: 4, "42": 5, 43: 6, 44: 7, 45: 8}
    _check_lobes(normalise_labels(_vol(a), mapping=mapping), lobes)
    lungs = _lungs_of(lobes)
    sides = np.where(lungs == 1, 100, np.where(lungs == 2, 200, 0)).astype(np.uint8)
    _check_thirds_of(normalise_labels(_vol(sides), "mapping", {100: "right", 200: "Left"}), lungs)
    with pytest.raises(UserError, match="not a lung region"):
        normalise_labels(_vol(a), mapping={41: 17})
    with pytest.raises(UserError, match="needs a mapping"):
        normalise_labels(_vol(a), "mapping")


# --- auto detection --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, expected",
    [
        ({1, 2}, "lungmask_r231"),
        ({1, 2, 3, 4, 5}, "lungmask_ltrclobes"),
        ({2, 3, 4}, "lungmask_ltrclobes"),
        ({4, 5, 6, 7, 8}, "cip"),
        ({7, 8}, "cip"),
        ({9, 10, 11, 12, 13, 14}, "cip"),
        ({9, 12, 521, 777}, "cip"),
        ({2 << 8 | 4, 5}, "cip"),
        (set(range(1, 118)), "totalsegmentator"),
        ({5, 10, 11, 14, 20, 110, 117}, "totalsegmentator"),
    ],
)
def test_detect_source(values, expected):
    assert detect_source(values) == expected


@pytest.mark.parametrize(
    "values",
    [{1}, {2}, {2, 3}, {4, 5}, {10, 11, 12, 13, 14}, set(range(1, 60)), {13, 14, 15, 16, 17, 18}, {200}],
)
def test_detect_source_refuses_ambiguous_maps(values):
    with pytest.raises(UserError, match="choose the label source"):
        detect_source(values)


def test_auto_normalises_each_kind():
    lobes = _lobes()
    lungs = _lungs_of(lobes)
    _check_lobes(normalise_labels(_vol(lobes.astype(np.uint16) | (1 << 8))), lobes)
    _check_lobes(normalise_labels(_vol(_encode(lobes, {7: 1, 8: 2, 4: 3, 5: 4, 6: 5}))), lobes)
    ts = _encode(lobes, {7: 10, 8: 11, 4: 12, 5: 13, 6: 14})
    ts[0, 0, :5] = (1, 5, 90, 116, 117)
    _check_lobes(normalise_labels(_vol(ts)), lobes)
    _check_thirds_of(normalise_labels(_vol(lungs)), lungs)
    with pytest.raises(UserError, match="lungs.nrrd: cannot tell"):
        normalise_labels(_vol((lungs > 0).astype(np.uint8)), name="lungs.nrrd")


# --- validation ----------------------------------------------------------------------------------------
def test_invalid_label_maps():
    lobes = _lobes()
    with pytest.raises(UserError, match="empty"):
        normalise_labels(_vol(np.zeros(SHAPE, np.uint8)))
    bad = lobes.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        normalise_labels(_vol(bad), "cip")
    with pytest.raises(UserError, match="fractional"):
        normalise_labels(_vol(lobes * 0.5), "cip")
    with pytest.raises(UserError, match="negative"):
        normalise_labels(_vol(-lobes.astype(np.int16)), "cip")
    organs = np.zeros(SHAPE, np.uint8)
    organs[2:5, 2:5, 2:5] = 5  # liver only
    organs[0, 0, 0] = 117
    with pytest.raises(UserError, match="no lung labels found in seg.nii.gz"):
        normalise_labels(_vol(organs), "totalsegmentator", name="seg.nii.gz")
    mixed = lobes.copy()
    mixed[lobes == 8] = 11
    with pytest.raises(UserError, match="mixes lobes and lung thirds"):
        normalise_labels(_vol(mixed), "cip")
    with pytest.raises(UserError, match="unknown label source"):
        normalise_labels(_vol(lobes), "freesurfer")
    # whole-number floats (e.g. NIfTI written as float) are fine
    _check_lobes(normalise_labels(_vol(lobes.astype(np.float32)), "cip"), lobes)


# --- lung thirds -----------------------------------------------------------------------------------------
def _ellipsoid_lungs(shape=(40, 30, 40)) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    right = ((z - 20) / 17.0) ** 2 + ((y - 15) / 12.0) ** 2 + ((x - 10) / 8.0) ** 2 <= 1
    left = ((z - 22) / 15.0) ** 2 + ((y - 15) / 11.0) ** 2 + ((x - 30) / 7.0) ** 2 <= 1
    return (right * 1 + left * 2).astype(np.uint8)


def _check_thirds(lungs: Volume, thirds: Volume) -> None:
    t = thirds.array
    assert set(np.unique(t[lungs.array == 1])) == {12, 13, 14}
    assert set(np.unique(t[lungs.array == 2])) == {9, 10, 11}
    np.testing.assert_array_equal(t > 0, lungs.array > 0)
    for lung_value, ids in ((1, (12, 13, 14)), (2, (9, 10, 11))):
        mask = lungs.array == lung_value
        largest_slice = max(int(mask[k].sum()) for k in range(mask.shape[0]))
        counts = np.array([int((t == rid).sum()) for rid in ids])
        assert np.all(np.abs(counts - mask.sum() / 3.0) <= largest_slice), counts
        assert counts.max() - counts.min() <= largest_slice, counts
        kk, jj, ii = np.nonzero(mask)
        z = lungs.index_to_lps(np.stack([ii, jj, kk], -1))[:, 2]
        labels_here = t[kk, jj, ii]
        upper, middle, lower = (z[labels_here == rid] for rid in ids)
        assert upper.min() >= middle.max() and middle.min() >= lower.max()
        assert upper.mean() > middle.mean() > lower.mean()


def test_lung_thirds_equal_volumes_and_order():
    lungs = Volume(_ellipsoid_lungs(), spacing=(1.5, 1.5, 2.5), origin=(-30, -20, -100))
    _check_thirds(lungs, lung_thirds(lungs))


def test_lung_thirds_follow_the_patient_axis_in_flipped_images():
    a = _ellipsoid_lungs()
    lungs = Volume(a, spacing=(1.5, 1.5, 2.5), origin=(-30, -20, -100))
    nz = a.shape[0]
    flipped = Volume(a[::-1].copy(), spacing=lungs.spacing, origin=(-30, -20, -100 + (nz - 1) * 2.5),
                     direction=np.diag([1.0, 1.0, -1.0]))
    thirds, thirds_flipped = lung_thirds(lungs), lung_thirds(flipped)
    _check_thirds(flipped, thirds_flipped)
    # the same voxels in space get the same third
    np.testing.assert_array_equal(thirds_flipped.array[::-1], thirds.array)


def test_lung_thirds_oblique_direction():
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    lungs = Volume(_ellipsoid_lungs(), spacing=(1.5, 1.5, 2.5), direction=rot)
    thirds = lung_thirds(lungs)
    t, m = thirds.array, lungs.array
    for lung_value, ids in ((1, (12, 13, 14)), (2, (9, 10, 11))):
        counts = np.array([(t == rid).sum() for rid in ids])
        assert counts.max() - counts.min() <= 0.01 * (m == lung_value).sum() + 2
        kk, jj, ii = np.nonzero(m == lung_value)
        z = lungs.index_to_lps(np.stack([ii, jj, kk], -1))[:, 2]
        means = [z[t[kk, jj, ii] == rid].mean() for rid in ids]
        assert means[0] > means[1] > means[2]


def test_lung_thirds_empty_and_one_lung():
    assert not lung_thirds(Volume(np.zeros((5, 5, 5), np.uint8))).array.any()
    a = _ellipsoid_lungs()
    a[a == 2] = 0
    t = lung_thirds(Volume(a)).array
    assert set(np.unique(t)) == {0, 12, 13, 14}


# --- resampling -----------------------------------------------------------------------------------------
def test_resample_labels_to_another_grid():
    lobes = _lobes()
    labels = Volume(lobes, spacing=(2.0, 2.0, 3.0), origin=(-30.0, -12.0, -40.0))
    # a finer, flipped-x reference grid covering the label map
    ref = Volume(np.zeros((36, 24, 60), np.int16), spacing=(1.0, 1.0, 2.0), origin=(28.5, -12.0, -40.0),
                 direction=np.diag([-1.0, 1.0, 1.0]))
    out = resample_labels(labels, ref)
    assert out.same_geometry(ref) and out.array.dtype == lobes.dtype
    # check each output voxel against the label at its physical point (nearest neighbour)
    kk, jj, ii = np.nonzero(np.ones(ref.shape, bool))
    idx = labels.lps_to_index(ref.index_to_lps(np.stack([ii, jj, kk], -1)))
    near = np.round(idx).astype(int)
    inside = np.all((near >= 0) & (near < np.array(labels.size)), axis=1)
    expected = np.zeros(ref.shape, lobes.dtype)
    expected[kk[inside], jj[inside], ii[inside]] = lobes[near[inside, 2], near[inside, 1], near[inside, 0]]
    on_edge = np.any(np.abs(idx - np.round(idx)) > 0.499, axis=1).reshape(ref.shape)
    assert np.mean(out.array[~on_edge] == expected[~on_edge]) == 1.0
    labels_out = normalise_labels(out, "cip")
    assert labels_out.kind == "lobes" and set(labels_out.region_ids) == {4, 5, 6, 7, 8}
    assert resample_labels(labels, labels) is labels


def test_resample_labels_refuses_disjoint_grids():
    labels = Volume(_lobes(), spacing=(2.0, 2.0, 3.0))
    far = Volume(np.zeros((10, 10, 10), np.int16), origin=(500.0, 500.0, 500.0))
    with pytest.raises(UserError, match="do not overlap"):
        resample_labels(labels, far)
    corner = Volume(np.zeros((2, 2, 2), np.int16), origin=(0.0, 0.0, 0.0))  # overlaps only background
    with pytest.raises(UserError, match="none of the labels"):
        resample_labels(labels, corner)


# --- real label maps --------------------------------------------------------------------------------------
def _side_positions(labels: LungLabels):
    out = {}
    for rid in labels.region_ids:
        kk, jj, ii = np.nonzero(labels.regions.array == rid)
        out[rid] = labels.regions.index_to_lps(np.stack([ii, jj, kk], -1))
    return out


def _assert_right_is_patient_right(labels: LungLabels) -> None:
    pos = _side_positions(labels)
    right = np.concatenate([p for rid, p in pos.items() if region_side(rid) == "right"])
    left = np.concatenate([p for rid, p in pos.items() if region_side(rid) == "left"])
    mid = 0.5 * (right[:, 0].mean() + left[:, 0].mean())
    assert max(pos[r][:, 0].mean() for r in pos if region_side(r) == "right") < min(
        pos[r][:, 0].mean() for r in pos if region_side(r) == "left"
    )
    assert np.mean(right[:, 0] < mid) > 0.99 and np.mean(left[:, 0] > mid) > 0.99
    # lungs derived from the regions
    lungs = labels.lungs.array
    assert np.all(lungs[np.isin(labels.regions.array, (4, 5, 6, 12, 13, 14))] == 1)
    assert np.all(lungs[np.isin(labels.regions.array, (7, 8, 9, 10, 11))] == 2)


def test_real_cip_thirds(shared_data):
    volume = read_volume(shared_data / "real" / "cip_chest_ct" / "lm-64.nrrd")
    labels = normalise_labels(volume, name="lm-64.nrrd")
    assert labels.kind == "thirds" and labels.region_ids == THIRD_IDS
    raw = np.asarray(volume.array)
    # airway/vessel voxels in a lung region stay there; airway with region 0 (trachea) is background
    np.testing.assert_array_equal(labels.regions.array, np.where((raw & 0xFF) > 0, raw & 0xFF, 0))
    assert labels.lungs.array[raw == 512].max() == 0
    _assert_right_is_patient_right(labels)
    pos = _side_positions(labels)
    for upper, middle, lower in ((12, 13, 14), (9, 10, 11)):
        assert pos[upper][:, 2].mean() > pos[middle][:, 2].mean() > pos[lower][:, 2].mean()


def test_real_cip_lobes(shared_data):
    volume = read_volume(shared_data / "real" / "cip_chest_ct" / "crop_ct_interactiveLobeSegmentation.nrrd")
    labels = normalise_labels(volume)
    assert labels.kind == "lobes" and labels.region_ids == (4, 5, 6, 7, 8)
    assert int((labels.lungs.array > 0).sum()) == int(np.isin(np.asarray(volume.array) & 0xFF, (4, 5, 6, 7, 8)).sum())
    _assert_right_is_patient_right(labels)


def test_real_whole_lung_needs_a_side(shared_data):
    volume = read_volume(shared_data / "real" / "cip_chest_ct" / "wholeLung-64.nrrd")
    with pytest.raises(UserError, match="left from right"):
        normalise_labels(volume, "cip")
    with pytest.raises(UserError, match="choose the label source"):
        normalise_labels(volume)


def test_real_totalsegmentator(shared_data):
    volume = read_volume(shared_data / "real" / "totalsegmentator_chest_ct" / "example_seg_3mm.nii.gz")
    labels = normalise_labels(volume, "totalsegmentator")
    raw = np.asarray(volume.array)
    assert labels.kind == "lobes"
    present = set(labels.region_ids)
    assert present <= {4, 5, 6, 7, 8} and {6, 7, 8} <= present  # a lung-base scan: lower lobes at least
    for ts_value, cip in {10: 7, 11: 8, 12: 4, 13: 5, 14: 6}.items():
        assert int((labels.regions.array == cip).sum()) == int((raw == ts_value).sum())
    assert normalise_labels(volume).regions.array.tolist() == labels.regions.array.tolist()  # auto: v2
    _assert_right_is_patient_right(labels)
    # on another grid (identity direction, 4 mm): still lobes on the right sides
    lo = volume.index_to_lps(np.array([[0, 0, 0], list(np.array(volume.size) - 1)]))
    origin = lo.min(axis=0)
    size = np.ceil((lo.max(axis=0) - origin) / 4.0).astype(int) + 1
    ref = Volume(np.zeros(tuple(size[::-1]), np.int16), spacing=(4.0, 4.0, 4.0), origin=tuple(origin))
    moved = normalise_labels(resample_labels(volume, ref), "totalsegmentator")
    assert moved.lungs.same_geometry(ref) and {6, 7, 8} <= set(moved.region_ids)
    _assert_right_is_patient_right(moved)


# --- given labels against the CT (check_lung_labels) ---------------------------------------------------------------
def test_real_labels_that_fit_their_ct_pass(shared_data):
    folder = shared_data / "real" / "cip_chest_ct"
    ct = read_volume(folder / "ct-64.nrrd")
    labels = normalise_labels(read_volume(folder / "lm-64.nrrd"), name="lm-64.nrrd")
    assert check_lung_labels(labels, ct) == []


def test_labels_of_a_few_lung_voxels_on_an_abdominal_ct_are_refused(shared_data):
    """TotalSegmentator's abdominal example: its lobe labels hold about 116 mL of lung bases."""
    folder = shared_data / "real" / "totalsegmentator_chest_ct"
    ct = read_volume(folder / "example_ct_sm_3mm.nii.gz")
    labels = normalise_labels(resample_labels(read_volume(folder / "example_seg_3mm.nii.gz"), ct), "totalsegmentator")
    with pytest.raises(UserError, match=r"cover only 1\d\d mL of lung \(at least 500 mL"):
        check_lung_labels(labels, ct)


@pytest.fixture(scope="module")
def cip_case(shared_data):
    folder = shared_data / "real" / "cip_chest_ct"
    return read_volume(folder / "ct-64.nrrd"), normalise_labels(read_volume(folder / "lm-64.nrrd"))


def test_swapped_sides_are_refused(cip_case):
    ct, labels = cip_case
    a = labels.lungs.array
    swapped = LungLabels(labels.lungs.with_array(np.where(a > 0, 3 - a, 0).astype(np.uint8)),
                         lung_thirds(labels.lungs.with_array(np.where(a > 0, 3 - a, 0).astype(np.uint8))), "thirds")
    with pytest.raises(UserError, match="right and left are swapped in the lung labels"):
        check_lung_labels(swapped, ct)


def test_a_convention_that_leaves_a_lung_empty_is_refused(cip_case):
    """CIP lobes 4-8 read as lungmask LTRCLobes (1 LUL ... 5 RLL) keep only labels 4 and 5: no left lung."""
    ct, labels = cip_case
    lobes = np.zeros(labels.lungs.shape, np.uint8)
    k = labels.lungs.array
    lobes[k == 1], lobes[k == 2] = 4, 7  # right upper and left upper "lobes" in CIP values
    wrong = normalise_labels(labels.lungs.with_array(lobes), "lungmask_ltrclobes")  # 4 -> RML; 7 is no LTRC value
    with pytest.raises(UserError, match="give the left lung no voxels"):
        check_lung_labels(wrong, ct)


def test_labels_that_do_not_sit_on_the_lungs_are_refused(cip_case):
    ct, labels = cip_case
    shifted = np.zeros_like(labels.lungs.array)
    shifted[:, :, 20:] = labels.lungs.array[:, :, :-20]  # 8 cm to the patient's left: mostly soft tissue and air
    moved = LungLabels(labels.lungs.with_array(shifted), lung_thirds(labels.lungs.with_array(shifted)), "thirds")
    with pytest.raises(UserError, match="the labels do not match this CT's lungs"):
        check_lung_labels(moved, ct)


def test_regions_covering_part_of_the_lungs_give_a_warning(cip_case):
    ct, labels = cip_case
    regions = labels.regions.array.copy()
    regions[regions == 14] = 0  # the right lower third missing
    partial = LungLabels(labels.lungs, labels.regions.with_array(regions), "thirds")
    warnings = check_lung_labels(partial, ct)
    assert [w.code for w in warnings] == ["regions_partial"] and 80 < warnings[0].values["covered_percent"] < 90
    assert str(warnings[0]).startswith("the thirds cover 8") and "no region" in str(warnings[0])


@pytest.mark.parametrize("name, region", [("Lung_R", 2), ("Lung_L", 3), ("Lung_RUL", 4), ("Lung_RML", 5),
                                          ("Lung_RLL", 6), ("Lung_LUL", 7), ("Lung_LLL", 8), ("right lung", 2),
                                          ("GTV", None), ("Lungs", None)])
def test_segment_names_of_structure_sets_map_to_lung_regions(name, region):
    from CTPerfusionMappingLib.labels import segment_region

    assert segment_region("Segment_1", name) == region
