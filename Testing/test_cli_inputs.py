"""``pancdiff detect`` refuses every bad input the way a user needs: exit 2 (3 for a missing
dependency), ONE line on stderr naming the file, no traceback, and nothing written.

These runs fail before any model is loaded, so each takes about a second.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import FAST, image_like, leftovers, pancdiff, synthetic_ct, write_case


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path]:
    return write_case(tmp_path_factory.mktemp("case"))


def assert_refused(run, out: Path, code: int = 2, mentions: str = "") -> str:
    """Exit code, exactly one stderr line (the error), no traceback, nothing written."""
    assert run.code == code, run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr_lines) == 1, run.stderr
    line = run.stderr_lines[0]
    assert line.startswith("pancdiff: error: ")
    assert mentions in line
    assert leftovers(out) == []
    return line


def detect(ct, mask, out, *extra) -> object:
    args = ["detect", ct, "--out", out, "--quiet", *FAST, *extra]
    if mask is not None:
        args[2:2] = ["--pancreas-mask", mask]
    return pancdiff(*args)


def _save(array: np.ndarray, path: Path, geometry: dict | None = None) -> Path:
    image = image_like(array) if geometry is None else image_like(array, geometry)
    sitk.WriteImage(image, str(path))
    return path


# -- the CT ------------------------------------------------------------------------------------------


def test_missing_ct_file(tmp_path, case):
    out = tmp_path / "out"
    assert_refused(detect(tmp_path / "nope.nii.gz", case[1], out), out, mentions="nope.nii.gz")


def test_folder_without_dicom(tmp_path, case):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    line = assert_refused(detect(folder, case[1], out), out, mentions="not_dicom")
    assert "DICOM" in line


def test_truncated_file(tmp_path, case):
    data = case[0].read_bytes()
    raw = gzip.decompress(data)
    broken = tmp_path / "truncated.nii.gz"
    broken.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    out = tmp_path / "out"
    line = assert_refused(detect(broken, case[1], out), out, mentions="truncated.nii.gz")
    assert "truncated" in line


def test_2d_image(tmp_path, case):
    path = tmp_path / "slice.nii.gz"
    image = sitk.GetImageFromArray(synthetic_ct()[0][3])
    sitk.WriteImage(image, str(path))
    out = tmp_path / "out"
    line = assert_refused(detect(path, case[1], out), out, mentions="slice.nii.gz")
    assert "2D" in line or "single slice" in line


def test_4d_image(tmp_path, case):
    path = tmp_path / "series.nii.gz"
    volume = image_like(synthetic_ct()[0])
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))
    out = tmp_path / "out"
    line = assert_refused(detect(path, case[1], out), out, mentions="series.nii.gz")
    assert "4D" in line


def test_non_hu_data(tmp_path, case):
    hu = synthetic_ct()[0]
    eight_bit = np.clip((hu.astype(float) + 1000) / 8, 0, 255).astype(np.uint8)  # air at 0, not -1000
    path = _save(eight_bit, tmp_path / "export.nii.gz")
    out = tmp_path / "out"
    line = assert_refused(detect(path, case[1], out), out, mentions="export.nii.gz")
    assert "Hounsfield" in line


def test_nan_voxels(tmp_path, case):
    hu = synthetic_ct()[0].astype(np.float32)
    hu[2, 10, 10] = np.nan
    path = _save(hu, tmp_path / "nan.nrrd")  # NRRD: ITK's NIfTI reader silently turns NaN into 0
    out = tmp_path / "out"
    line = assert_refused(detect(path, case[1], out), out, mentions="nan.nrrd")
    assert "NaN" in line


# -- the pancreas mask -----------------------------------------------------------------------------


def _mask_refused(tmp_path: Path, ct: Path, mask: np.ndarray, name: str, geometry: dict | None = None) -> str:
    """Save ``mask`` as ``name`` beside the test, run detect with it, and return the refusal line."""
    path = _save(mask, tmp_path / name, geometry)
    out = tmp_path / "out"
    return assert_refused(detect(ct, path, out), out, mentions=name)


def test_missing_mask_file(tmp_path, case):
    out = tmp_path / "out"
    assert_refused(detect(case[0], tmp_path / "no_mask.nii.gz", out), out, mentions="no_mask.nii.gz")


def test_mask_not_overlapping_the_ct(tmp_path, case):
    _, pancreas = synthetic_ct()
    far = {"spacing": (1.3, 1.1, 2.5), "origin": (1041.5, -17.25, 88.0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
    line = _mask_refused(tmp_path, case[0], pancreas.astype(np.uint8), "elsewhere.nii.gz", far)
    assert "overlap" in line


def test_empty_pancreas_mask(tmp_path, case):
    _, pancreas = synthetic_ct()
    line = _mask_refused(tmp_path, case[0], np.zeros_like(pancreas, dtype=np.uint8), "empty.nii.gz")
    assert "empty" in line


def test_mask_with_a_different_extent(tmp_path, case):
    _, pancreas = synthetic_ct()
    half = pancreas[:, :22].astype(np.uint8)  # half the rows: half the box
    line = _mask_refused(tmp_path, case[0], half, "half.nii.gz")
    assert "extent" in line


def test_ct_given_as_its_own_mask_is_refused_as_not_labels(tmp_path, case):
    out = tmp_path / "out"
    line = assert_refused(detect(case[0], case[0], out), out, mentions=case[0].name)
    assert "like a CT in HU" in line and "-1" in line


def test_mask_with_non_integer_values_is_refused(tmp_path, case):
    _, pancreas = synthetic_ct()
    smooth = pancreas.astype(np.float32) * 3.7  # an image, not labels
    line = _mask_refused(tmp_path, case[0], smooth, "probabilities.nrrd")
    assert "non-integer" in line


def test_multi_organ_label_map_is_refused(tmp_path, case):
    _, pancreas = synthetic_ct()
    organs = (np.arange(pancreas.size).reshape(pancreas.shape) % 40).astype(np.uint8)  # 40 labels
    line = _mask_refused(tmp_path, case[0], organs, "organs.nii.gz")
    assert "40 different values" in line


def test_a_few_stray_voxels_are_not_a_pancreas(tmp_path, case):
    _, pancreas = synthetic_ct()
    stray = np.zeros_like(pancreas, dtype=np.uint8)
    stray[3, 20:22, 22:24] = 1  # 4 voxels, 0.014 ml
    line = _mask_refused(tmp_path, case[0], stray, "stray.nii.gz")
    assert "ml, outside the plausible 1-500 ml" in line


def test_a_mask_of_the_whole_scan_is_too_large_for_a_pancreas(tmp_path):
    hu, _ = synthetic_ct(shape_zyx=(24, 120, 120))  # about 1 litre in the CT's voxels
    ct_path = _save(hu, tmp_path / "big_ct.nii.gz")
    path = _save(np.ones(hu.shape, dtype=np.uint8), tmp_path / "everything.nii.gz")
    out = tmp_path / "out"
    line = assert_refused(detect(ct_path, path, out), out, mentions="everything.nii.gz")
    assert "outside the plausible 1-500 ml" in line and "whole body" in line


def test_pancreas_region_of_air_is_refused(tmp_path, case):
    hu, _ = synthetic_ct()
    air = np.full_like(hu, -1024)  # an all-air volume passes the HU check (it has air) but holds no pancreas
    ct_path = _save(air, tmp_path / "air.nii.gz")
    out = tmp_path / "out"
    line = assert_refused(detect(ct_path, case[1], out), out, mentions=case[1].name)
    assert "median -1024 HU" in line and "soft tissue" in line


def test_mask_with_the_ct_size_but_no_geometry_gets_that_hint(tmp_path, case):
    _, pancreas = synthetic_ct()
    path = tmp_path / "from_numpy.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(pancreas.astype(np.uint8)), str(path))  # origin 0, spacing 1
    out = tmp_path / "out"
    line = assert_refused(detect(case[0], path, out), out, mentions="from_numpy.nii.gz")
    assert "the CT's size 48x44x7" in line and "origin" in line and "spacing" in line


# -- other inputs ------------------------------------------------------------------------------------


def test_missing_markers_file(tmp_path, case):
    out = tmp_path / "out"
    assert_refused(
        detect(case[0], case[1], out, "--markers", tmp_path / "points.mrk.json"), out, mentions="points.mrk.json"
    )


def test_markers_csv_without_coordinates(tmp_path, case):
    markers = tmp_path / "points.csv"
    markers.write_text("label,value\na,1\n")
    out = tmp_path / "out"
    line = assert_refused(detect(case[0], case[1], out, "--markers", markers), out, mentions="points.csv")
    assert "x,y,z" in line


def test_invalid_setting_is_one_line(tmp_path, case):
    out = tmp_path / "out"
    line = assert_refused(detect(case[0], case[1], out, "--threshold", "1.5"), out)
    assert "threshold" in line


def test_cohort_csv_without_ct_column(tmp_path):
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("path\na.nii.gz\n")
    out = tmp_path / "out"
    line = assert_refused(pancdiff("detect", cohort, "--out", out, "--quiet", *FAST), out, mentions="cohort.csv")
    assert "'ct' column" in line


def test_existing_results_are_not_overwritten(tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    run = detect(case[0], case[1], out)
    assert run.code == 2 and len(run.stderr_lines) == 1
    assert "--overwrite" in run.stderr_lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert (out / "summary.json").read_text() == "{}"


def test_overwrite_never_replaces_a_folder_of_other_files(tmp_path, case):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    run = detect(case[0], case[1], out, "--overwrite")
    assert run.code == 2 and "no PancDiff results" in run.stderr_lines[0]
    assert (out / "thesis.tex").read_text() == "precious"


def test_missing_weights_exit_3_and_write_nothing(tmp_path, case):
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    out = tmp_path / "out"
    run = pancdiff("detect", case[0], "--pancreas-mask", case[1], "--out", out, "--quiet", "--model", empty_model)
    assert_refused(run, out, code=3, mentions="model.json")


def test_json_mode_reports_the_error_as_a_json_line_too(tmp_path, case):
    out = tmp_path / "out"
    run = pancdiff("detect", tmp_path / "nope.nii.gz", "--pancreas-mask", case[1], "--out", out, "--progress", "json")
    assert run.code == 2 and "Traceback" not in run.stderr
    events = run.json_lines()
    assert events[-1]["event"] == "error" and events[-1]["exit_code"] == 2
    assert "nope.nii.gz" in events[-1]["message"]
    assert [line for line in run.stderr_lines if "error" in line] == [f"pancdiff: error: {events[-1]['message']}"]


def test_default_mode_shows_progress_then_one_error_line(tmp_path, case):
    out = tmp_path / "out"
    run = pancdiff("detect", tmp_path / "nope.nii.gz", "--pancreas-mask", case[1], "--out", out)
    assert run.code == 2 and "Traceback" not in run.stderr
    assert [line for line in run.stderr_lines if "error" in line] == [run.stderr_lines[-1]]
    assert leftovers(out) == []


def test_version_and_help(tmp_path):
    run = pancdiff("--version")
    assert run.code == 0 and run.stdout.startswith("pancdiff ")
    run = pancdiff("detect", "--help")
    assert run.code == 0 and "--pancreas-mask" in run.stdout and "heatmap.nii.gz" in run.stdout


def test_doctor_reports_versions(tmp_path):
    run = pancdiff("doctor", "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["torch"]["version"] and "SimpleITK" in report["packages"]
    assert "weights" in report["totalsegmentator"] and "folder" in report["models"]
