"""Pancreas masks: from a file (geometry checked, resampled when only the grid differs) or TotalSegmentator."""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pancdiff.ctio import read_ct
from pancdiff.errors import DependencyError, InputError
from pancdiff.pancreas import pancreas_mask, read_labels
from pancdiff.phantom import PhantomConfig, make_phantom

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-example"
SMALL = PhantomConfig(shape=(10, 64, 64), spacing=(3.0, 3.0, 4.0))


@pytest.fixture
def case(tmp_path):
    """A phantom CT with a tumor (labels 1 and 2), written to disk; returns (CTVolume, labels image)."""
    ct_image, labels = make_phantom(np.random.default_rng(4), SMALL, tumor=True)
    sitk.WriteImage(ct_image, str(tmp_path / "ct.nii.gz"))
    return read_ct(tmp_path / "ct.nii.gz"), labels


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_every_label_above_zero_is_pancreas(tmp_path, case):
    ct, labels = case
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    mask = pancreas_mask(ct, tmp_path / "labels.nii.gz")
    truth = sitk.GetArrayFromImage(labels)
    assert {1, 2} <= set(np.unique(truth).tolist())
    assert mask.dtype == bool and mask.shape == ct.array.shape
    np.testing.assert_array_equal(mask, truth > 0)


def test_mask_stored_in_another_orientation_is_resampled_onto_the_ct_voxels(tmp_path, case):
    ct, labels = case
    flipped = sitk.DICOMOrient(labels, "LPS")  # same voxels, other storage order (CT is RAS)
    assert flipped.GetDirection() != labels.GetDirection()
    sitk.WriteImage(flipped, str(tmp_path / "lps.nii.gz"))
    np.testing.assert_array_equal(read_labels(ct, tmp_path / "lps.nii.gz"), sitk.GetArrayFromImage(labels))


def test_mask_on_a_coarser_grid_with_the_same_extent_is_resampled(tmp_path, case):
    ct, labels = case
    size = [n // 2 for n in labels.GetSize()]
    spacing = [s * 2 for s in labels.GetSpacing()]
    direction = np.asarray(labels.GetDirection()).reshape(3, 3)
    # Same outer box: the first coarse voxel's center sits half a fine voxel further in.
    origin = np.asarray(labels.GetOrigin()) + direction @ (np.asarray(labels.GetSpacing()) / 2)
    coarse_ref = sitk.Image(size, sitk.sitkUInt8)
    coarse_ref.SetSpacing(spacing)
    coarse_ref.SetDirection(labels.GetDirection())
    coarse_ref.SetOrigin(tuple(origin))
    coarse = sitk.Resample(sitk.Cast(labels > 0, sitk.sitkFloat32), coarse_ref, sitk.Transform(), sitk.sitkLinear)
    sitk.WriteImage(coarse, str(tmp_path / "coarse.nrrd"))  # float map, rounded on reading
    mask = pancreas_mask(ct, tmp_path / "coarse.nrrd")
    assert mask.shape == ct.array.shape
    assert _dice(mask, sitk.GetArrayFromImage(labels) > 0) > 0.6


def _refused(ct, path, match, folder):
    before = _files(folder)
    with pytest.raises(InputError, match=match) as info:
        pancreas_mask(ct, path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert _files(folder) == before


def test_mask_that_does_not_overlap_the_ct_is_refused(tmp_path, case):
    ct, labels = case
    labels.SetOrigin(tuple(np.asarray(labels.GetOrigin()) + (0.0, 0.0, 500.0)))
    sitk.WriteImage(labels, str(tmp_path / "elsewhere.nii.gz"))
    _refused(ct, tmp_path / "elsewhere.nii.gz", "does not overlap", tmp_path)


def test_mask_with_a_different_physical_extent_is_refused(tmp_path, case):
    ct, labels = case
    cropped = labels[8:56, 8:56, :]  # a mask saved on a cropped box
    sitk.WriteImage(cropped, str(tmp_path / "cropped.nii.gz"))
    _refused(ct, tmp_path / "cropped.nii.gz", "different physical extent", tmp_path)


def test_empty_mask_is_refused(tmp_path, case):
    ct, labels = case
    sitk.WriteImage(labels * 0, str(tmp_path / "empty.nii.gz"))
    _refused(ct, tmp_path / "empty.nii.gz", "empty", tmp_path)


def test_missing_or_2d_mask_file_is_refused(tmp_path, case):
    ct, labels = case
    _refused(ct, tmp_path / "nope.nii.gz", "not found", tmp_path)
    sitk.WriteImage(labels[:, :, 5], str(tmp_path / "slice.nii.gz"))
    _refused(ct, tmp_path / "slice.nii.gz", "2D", tmp_path)


# --- TotalSegmentator ---------------------------------------------------------------------------


def _fake_totalsegmentator(monkeypatch, behaviour):
    """Install a stand-in ``totalsegmentator.python_api`` whose function runs ``behaviour``."""
    calls = []

    def totalsegmentator(input, output, **kwargs):
        calls.append({"input": Path(input), "output": Path(output), **kwargs})
        print("TotalSegmentator chatter on stdout")
        behaviour(Path(input), Path(output))

    package = types.ModuleType("totalsegmentator")
    api = types.ModuleType("totalsegmentator.python_api")
    api.totalsegmentator = totalsegmentator
    package.python_api = api
    monkeypatch.setitem(sys.modules, "totalsegmentator", package)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)
    return calls


def _leftover_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("pancdiff-totalseg-*")}


def test_totalsegmentator_not_installed_says_how_to_install(monkeypatch, case):
    ct, _ = case
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", None)
    with pytest.raises(DependencyError, match=r"scripts/setup.sh --with-totalsegmentator") as info:
        pancreas_mask(ct, "totalsegmentator")
    assert info.value.exit_code == 3


@pytest.mark.parametrize("opt_in, existing, expected", [(None, None, False), ("1", None, True), (None, True, True)])
def test_totalsegmentator_usage_statistics_are_off_unless_chosen(
    monkeypatch, tmp_path, case, opt_in, existing, expected
):
    """A first run writes TotalSegmentator's config with statistics off; an existing config is left alone."""
    import json

    ct, labels = case
    home = tmp_path / "totalseg_home"
    home.mkdir()
    if existing is not None:
        (home / "config.json").write_text(json.dumps({"send_usage_stats": existing, "totalseg_id": "x"}))
    config = types.ModuleType("totalsegmentator.config")
    config.get_totalseg_dir = lambda: home

    def setup_totalseg():  # what TotalSegmentator writes on first use
        (home / "config.json").write_text(json.dumps({"send_usage_stats": True, "totalseg_id": "new"}))

    def set_config_key(key, value):
        data = json.loads((home / "config.json").read_text())
        data[key] = value
        (home / "config.json").write_text(json.dumps(data))

    config.setup_totalseg, config.set_config_key = setup_totalseg, set_config_key
    _fake_totalsegmentator(monkeypatch, lambda _in, out: sitk.WriteImage(labels, str(out)))
    monkeypatch.setitem(sys.modules, "totalsegmentator.config", config)
    if opt_in is None:
        monkeypatch.delenv("PANCDIFF_TOTALSEG_USAGE_STATS", raising=False)
    else:
        monkeypatch.setenv("PANCDIFF_TOTALSEG_USAGE_STATS", opt_in)
    pancreas_mask(ct, "totalsegmentator")
    assert json.loads((home / "config.json").read_text())["send_usage_stats"] is expected


def test_totalsegmentator_result_is_used_on_the_ct_grid(monkeypatch, capsys, case):
    ct, labels = case

    def segment(ct_file, seg_file):
        image = sitk.ReadImage(str(ct_file))
        assert image.GetSize() == ct.image.GetSize()
        out = sitk.Cast(labels > 0, sitk.sitkUInt8) * 7  # TotalSegmentator's pancreas label
        sitk.WriteImage(sitk.DICOMOrient(out, "LPS"), str(seg_file))  # nibabel-written: other orientation

    calls = _fake_totalsegmentator(monkeypatch, segment)
    before = _leftover_temp_dirs()
    mask = pancreas_mask(ct, "totalsegmentator", fast=False, device="cpu")
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(labels) > 0)
    assert calls[0]["roi_subset"] == ["pancreas"] and calls[0]["fast"] is False and calls[0]["device"] == "cpu"
    assert "chatter" not in capsys.readouterr().out  # stdout stays clean for JSON progress lines
    assert _leftover_temp_dirs() == before


def test_totalsegmentator_weights_missing_offline_explains_and_writes_nothing(monkeypatch, tmp_path, case):
    ct, _ = case

    def offline(ct_file, seg_file):
        raise ConnectionError("Failed to resolve 'github.com'")  # what requests raises with no network

    _fake_totalsegmentator(monkeypatch, offline)
    before, before_tmp = _files(tmp_path), _leftover_temp_dirs()
    with pytest.raises(DependencyError) as info:
        pancreas_mask(ct, "totalsegmentator", fast=True, device="cpu")
    message = str(info.value)
    assert "totalseg_download_weights -t total_fast" in message and "TOTALSEG_HOME_DIR" in message
    assert "\n" not in message and info.value.exit_code == 3
    assert _files(tmp_path) == before and _leftover_temp_dirs() == before_tmp


def test_totalsegmentator_empty_result_suggests_full_model_or_a_mask(monkeypatch, case):
    ct, labels = case
    _fake_totalsegmentator(monkeypatch, lambda ct_file, seg_file: sitk.WriteImage(labels * 0, str(seg_file)))
    with pytest.raises(InputError, match="roi_subset can return empty") as info:
        pancreas_mask(ct, "totalsegmentator")
    assert "fast=False" in str(info.value) and "mask" in str(info.value)


@pytest.mark.shared_data
def test_real_ct_mask_file_lies_on_its_grid():
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not present at {SHARED}")
    ct = read_ct(SHARED / "example_ct_sm.nii.gz")
    mask = pancreas_mask(ct, SHARED / "pancreas.nii.gz")
    assert mask.sum() == 644
    assert np.flatnonzero(mask.any(axis=(1, 2))).size == 18
    low, high = np.percentile(ct.array[mask], [10, 90])
    assert -200 < low and high < 200  # (fatty) soft tissue, no air or bone: the mask sits on the organ


@pytest.mark.totalsegmentator
@pytest.mark.shared_data
def test_real_totalsegmentator_finds_the_pancreas():
    pytest.importorskip("totalsegmentator")
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not present at {SHARED}")
    ct = read_ct(SHARED / "example_ct_sm.nii.gz")
    try:
        mask = pancreas_mask(ct, "totalsegmentator", fast=True, device="auto")
    except DependencyError as exc:
        pytest.skip(f"TotalSegmentator weights unavailable: {exc}")
    reference = pancreas_mask(ct, SHARED / "pancreas.nii.gz")
    assert _dice(mask, reference) > 0.5


def test_totalsegmentator_never_gets_mps():
    from pancdiff.pancreas import _totalseg_device

    assert _totalseg_device("mps") == "cpu" and _totalseg_device("cuda") == "gpu"
    assert _totalseg_device("auto") in ("gpu", "cpu") and _totalseg_device("cuda:1") == "cuda:1"
