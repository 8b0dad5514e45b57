"""``pancdiff detect`` end to end on a small oblique CT with untrained weights (pipeline, not quality):
the output files, their geometry, the JSON progress protocol, --markers distances, cohorts,
--shard, --overwrite and Ctrl-C.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import FAST, REPO, cli_env, leftovers, pancdiff, write_case
from pancdiff.pipeline import RESULT_FILES
from PIL import Image
from scipy import ndimage

TOLERANCE_MM = 10.0


def _physical(image: sitk.Image, ijk) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """One detect run with markers (RAS, as Slicer shows them) and JSON progress."""
    root = tmp_path_factory.mktemp("detect")
    ct_path, mask_path = write_case(root)
    ct = sitk.ReadImage(str(ct_path))
    # Three points: the pancreas center, a point 20 mm beside it, and one far outside the image.
    center_lps = _physical(ct, (23.5, 21.5, 3.0))
    points_lps = [center_lps, center_lps + np.array([20.0, 0.0, 0.0]), center_lps + np.array([0.0, 300.0, 0.0])]
    markups = {
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "RAS",
                "controlPoints": [
                    {"label": f"p{n}", "position": [-p[0], -p[1], p[2]], "positionStatus": "defined"}
                    for n, p in enumerate(points_lps)
                ],
            }
        ]
    }
    markers = root / "points.mrk.json"
    markers.write_text(json.dumps(markups))
    out = root / "out"
    run = pancdiff(
        "detect", ct_path, "--pancreas-mask", mask_path, "--out", out, "--progress", "json",
        "--markers", markers, "--tolerance", str(TOLERANCE_MM), *FAST,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    return {"run": run, "out": out, "ct": ct, "mask": sitk.ReadImage(str(mask_path)), "points_lps": points_lps}


def test_writes_exactly_the_result_files(detected):
    assert sorted(p.name for p in detected["out"].iterdir()) == sorted(RESULT_FILES)
    assert leftovers(detected["out"]) == ["out"]  # no staging folder left beside it
    with Image.open(detected["out"] / "report.png") as png:
        assert png.format == "PNG" and png.size[0] > 600


def test_progress_json_lines_parse(detected):
    events = detected["run"].json_lines()  # every stdout line is one JSON object
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "done" and events[-1]["exit_code"] == 0
    assert events[-1]["out"] == str(detected["out"])
    assert {"stage", "progress"} <= set(kinds)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] and all("eta_s" in e for e in progress)
    # The detect bar counts canvases (the stage line's unit), not the detector's 2K network passes.
    summary = json.loads((detected["out"] / "summary.json").read_text())
    detect = [e for e in progress if e["stage"] == "detect"]
    assert {e["total"] for e in detect} == {summary["analyzed_tiles"]}
    assert [e["done"] for e in detect] == sorted(e["done"] for e in detect)


def test_heatmap_has_the_ct_geometry(detected):
    ct = detected["ct"]
    for name, pixel in (("heatmap.nii.gz", sitk.sitkFloat32), ("candidates.nii.gz", sitk.sitkUInt8)):
        image = sitk.ReadImage(str(detected["out"] / name))
        assert image.GetPixelID() == pixel
        assert image.GetSize() == ct.GetSize()
        np.testing.assert_allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), ct.GetDirection(), atol=1e-6)


def test_heatmap_is_zero_outside_analyzed_slices_and_candidates_are_its_threshold(detected):
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(detected["out"] / "heatmap.nii.gz")))
    cand = sitk.GetArrayFromImage(sitk.ReadImage(str(detected["out"] / "candidates.nii.gz")))
    mask = sitk.GetArrayFromImage(detected["mask"]).astype(bool)
    analyzed = mask.any(axis=(1, 2))
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert not heat[~analyzed].any()
    assert all(heat[k].max() > 0 for k in np.flatnonzero(analyzed))  # no evidence floor in FAST
    settings = json.loads((detected["out"] / "summary.json").read_text())["settings"]
    spacing_zyx = detected["mask"].GetSpacing()[::-1]
    near = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) <= settings["pancreas_margin_mm"] + 1e-6
    assert not heat[~near].any()  # only where a pancreatic tumor can be
    threshold = settings["threshold"]
    np.testing.assert_array_equal(cand, (heat >= threshold).astype(np.uint8))


def test_slices_csv_peaks_are_heatmap_maxima_at_their_physical_positions(detected):
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(detected["out"] / "heatmap.nii.gz")))
    rows = list(csv.DictReader((detected["out"] / "slices.csv").open()))
    mask = sitk.GetArrayFromImage(detected["mask"]).astype(bool)
    assert [int(r["slice_index"]) for r in rows] == list(np.flatnonzero(mask.any(axis=(1, 2))))
    for r in rows:
        i, j, k = int(r["peak_i"]), int(r["peak_j"]), int(r["peak_k"])
        assert k == int(r["slice_index"])
        assert heat[k, j, i] == pytest.approx(float(r["map_max"]), abs=1e-5) == pytest.approx(heat[k].max(), abs=1e-5)
        lps = _physical(detected["ct"], (i, j, k))
        got = [float(r[f"peak_lps_{a}_mm"]) for a in "xyz"]
        np.testing.assert_allclose(got, lps, atol=2e-3)
        np.testing.assert_allclose([float(r[f"peak_ras_{a}_mm"]) for a in "xyz"], lps * [-1, -1, 1], atol=2e-3)
        assert 0.0 <= float(r["tumor_probability"]) <= 1.0


def test_summary_names_model_settings_and_confidence(detected):
    summary = json.loads((detected["out"] / "summary.json").read_text())
    rows = list(csv.DictReader((detected["out"] / "slices.csv").open()))
    assert summary["model"]["untrained"] is True and summary["model"]["model_id"].startswith("untrained")
    assert summary["settings"]["steps"] == 2 and summary["settings"]["noise_level"] == 20
    assert summary["overall_confidence"] == pytest.approx(max(float(r["tumor_probability"]) for r in rows), abs=1e-5)
    assert "maximum" in summary["overall_confidence_definition"]
    assert summary["peaks"][0]["tumor_probability"] == pytest.approx(summary["overall_confidence"], abs=1e-5)
    assert summary["timing_s"]["total"] > 0


def test_markers_distances_match_a_brute_force_physical_computation(detected):
    summary = json.loads((detected["out"] / "summary.json").read_text())
    cand_image = sitk.ReadImage(str(detected["out"] / "candidates.nii.gz"))
    cand = sitk.GetArrayFromImage(cand_image).astype(bool)
    voxels = np.array([_physical(cand_image, (i, j, k)) for k, j, i in np.argwhere(cand)])
    result = summary["markers"]
    assert result["n"] == 3 and result["tolerance_mm"] == TOLERANCE_MM
    for point, got in zip(detected["points_lps"], result["points"]):
        np.testing.assert_allclose(got["position_lps_mm"], point, atol=1e-3)  # RAS in the file, LPS here
        index = np.rint(cand_image.TransformPhysicalPointToContinuousIndex([float(v) for v in point])).astype(int)
        inside = bool(np.all(index >= 0) and np.all(index < cand_image.GetSize()))
        on_candidate = inside and cand[index[2], index[1], index[0]]
        expected = 0.0 if on_candidate else float(np.min(np.linalg.norm(voxels - point, axis=1)))
        assert got["distance_to_candidate_mm"] == pytest.approx(expected, abs=2e-3)
        assert got["hit"] == (expected <= TOLERANCE_MM)
        assert got["inside_image"] == inside
    far = result["points"][2]
    assert far["hit"] is False and far["heatmap_value"] is None and far["distance_to_candidate_mm"] > 250


def test_report_shows_every_marker_slice_and_hit_says_its_chance_level(detected):
    summary = json.loads((detected["out"] / "summary.json").read_text())
    shown = {r["slice_index"]: r for r in summary["report_slices"]}
    ct = detected["ct"]
    for point in detected["points_lps"]:
        k = int(round(ct.TransformPhysicalPointToContinuousIndex([float(v) for v in point])[2]))
        if 0 <= k < ct.GetSize()[2]:
            assert "marker" in shown[k]["reason"]
            position = ct.TransformContinuousIndexToPhysicalPoint(
                [(ct.GetSize()[0] - 1) / 2, (ct.GetSize()[1] - 1) / 2, k]
            )
            assert shown[k]["position_mm"] == pytest.approx(position[2], abs=2.0)  # slice center, oblique grid
    assert any(r["reason"].startswith("finding") or "finding" in r["reason"] for r in summary["report_slices"])
    markers = summary["markers"]
    assert 0.0 <= markers["chance_level"] <= 1.0 and "random" in markers["chance_level_definition"]
    assert all(p["result"].split(",")[0].split(" ")[0] in ("hit", "miss") for p in markers["points"])


def test_cohort_shard_records_a_bad_ct_and_goes_on(tmp_path):
    """CSV of three CTs, shard 1/2 takes the 1st and 3rd; the 3rd is missing. Also --overwrite."""
    ct_a, mask_a = write_case(tmp_path / "data", "a")
    ct_b, mask_b = write_case(tmp_path / "data", "b", seed=1)
    cohort = tmp_path / "data" / "cohort.csv"
    cohort.write_text(
        "case,ct,pancreas_mask\n"
        f"first,{ct_a.name},{mask_a.name}\n"
        f"second,{ct_b.name},{mask_b.name}\n"
        "third,missing.nii.gz,missing_mask.nii.gz\n"
    )
    out = tmp_path / "cohort_out"
    out.mkdir()
    (out / "cohort_summary.csv").write_text("old results\n")
    run = pancdiff("detect", cohort, "--out", out, "--shard", "1/2", "--overwrite", "--quiet", *FAST)
    assert run.code == 0, run.stderr
    assert len(run.stderr_lines) == 1 and "1 of 2 CTs failed" in run.stderr_lines[0]
    rows = list(csv.DictReader((out / "cohort_summary.csv").open()))
    assert [(r["case"], r["status"]) for r in rows] == [("first", "ok"), ("third", "error")]
    assert "missing.nii.gz" in rows[1]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["cohort_summary.csv", "first"]
    assert sorted(p.name for p in (out / "first").iterdir()) == sorted(RESULT_FILES)
    first = json.loads((out / "first" / "summary.json").read_text())
    assert float(rows[0]["overall_confidence"]) == pytest.approx(first["overall_confidence"], abs=1e-6)
    assert float(rows[0]["fine_texture_hu"]) == pytest.approx(first["input_domain"]["fine_texture_hu"])
    assert rows[0]["inside_input_domain"] == "", "random weights have no model card range to check against"


def test_sigint_after_progress_started_leaves_nothing(tmp_path):
    ct_path, mask_path = write_case(tmp_path / "data")
    out = tmp_path / "out"
    # Many steps so the run is surely still detecting when the signal lands.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pancdiff", "detect", str(ct_path), "--pancreas-mask", str(mask_path),
         "--out", str(out), "--progress", "json", "--random-weights", "--noise", "400", "--steps", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "progress":
                break
        else:
            pytest.fail(f"no progress event; stderr: {proc.stderr.read()}")
        staging = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
        assert staging, "the run should be writing into a staging folder"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert leftovers(out) == []
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()][-1] == "pancdiff: error: cancelled; nothing was written"
    last = json.loads(rest.strip().splitlines()[-1])
    assert last == {"event": "error", "message": "cancelled; nothing was written", "exit_code": 130}
