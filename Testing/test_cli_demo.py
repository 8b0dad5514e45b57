"""``pancdiff demo`` on the bundled sample CT: both results, the simulated lesion where it was put,
the distance from the strongest peak to it, and exit 3 (nothing written) without weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import REPO, leftovers, pancdiff
from pancdiff.pipeline import RESULT_FILES

SAMPLE = REPO / "PancDiffSlicer" / "Resources" / "SampleData"
needs_sample = pytest.mark.skipif(not (SAMPLE / "example_ct_sm.nii.gz").is_file(), reason="Resources/SampleData absent")


@needs_sample
def test_demo_with_random_weights_writes_both_results_and_the_lesion_distance(tmp_path):
    out = tmp_path / "demo"
    run = pancdiff("demo", "--out", out, "--random-weights", "--steps", "1", "--noise", "10", "--min-anomaly", "0")
    assert run.code == 0, run.stderr
    assert "WARNING: untrained random weights" in run.stdout
    assert "distance from the strongest peak to the lesion center" in run.stdout

    assert sorted(p.name for p in out.iterdir()) == ["as_is", "comparison.png", "demo_summary.json", "with_lesion"]
    assert sorted(p.name for p in (out / "as_is").iterdir()) == sorted(RESULT_FILES)
    assert sorted(p.name for p in (out / "with_lesion").iterdir()) == sorted(
        [*RESULT_FILES, "ct_with_lesion.nii.gz", "lesion.nii.gz"]
    )
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["model"]["untrained"] and "warning" in summary
    lesion = summary["lesion"]

    # The lesion is darker, inside the pancreas, centered where the summary says.
    ct = sitk.ReadImage(str(SAMPLE / "example_ct_sm.nii.gz"))
    before = sitk.GetArrayFromImage(ct).astype(float)
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "with_lesion" / "ct_with_lesion.nii.gz"))).astype(float)
    lesion_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "with_lesion" / "lesion.nii.gz"))).astype(bool)
    pancreas = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "pancreas.nii.gz"))).astype(bool)
    assert lesion_mask.sum() == lesion["voxels"] > 0
    assert not (lesion_mask & ~pancreas).any()
    assert not (after != before)[~pancreas].any()
    assert (after - before)[lesion_mask].mean() < -0.5 * abs(lesion["delta_hu"])
    i, j, k = lesion["center_voxel_ijk"]
    assert lesion_mask[k, j, i]
    np.testing.assert_allclose(ct.TransformIndexToPhysicalPoint((i, j, k)), lesion["center_lps_mm"], atol=0.01)

    # Both reports show the lesion's center slice (its marker) and its largest section; the side-by-side
    # picture is there.
    center_k = lesion["center_voxel_ijk"][2]
    largest_k = int(np.argmax(lesion_mask.sum(axis=(1, 2))))
    for run_name in ("as_is", "with_lesion"):
        shown = json.loads((out / run_name / "summary.json").read_text())["report_slices"]
        reasons = {r["slice_index"]: r["reason"] for r in shown}
        assert "marker simulated lesion center" in reasons[center_k]
        assert "known lesion" in reasons[largest_k]
        assert summary[run_name]["lesion_center_result"].split(",")[0].split(" ")[0] in ("hit", "miss")
    assert summary["reports"][0] == "comparison.png" and (out / "comparison.png").stat().st_size > 10_000

    # The distance is the strongest peak's, measured in mm.
    peak = summary["with_lesion"]["strongest_peak"]
    expected = np.linalg.norm(np.subtract(peak["peak_lps_mm"], lesion["center_lps_mm"]))
    assert summary["distance_strongest_peak_to_lesion_mm"] == pytest.approx(expected, abs=0.02)


def test_demo_without_weights_exits_3_and_writes_nothing(tmp_path):
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    out = tmp_path / "demo"
    run = pancdiff("demo", "--out", out, "--model", empty_model, "--quiet")
    assert run.code == 3
    assert len(run.stderr_lines) == 1 and run.stderr_lines[0].startswith("pancdiff: error: ")
    assert "model.json" in run.stderr_lines[0]
    assert leftovers(out) == []
