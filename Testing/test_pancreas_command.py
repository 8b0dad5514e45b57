"""``pancdiff pancreas``: the Slicer module's first step with TotalSegmentator as the pancreas source.

TotalSegmentator itself (package and weights) is not installed here, so the success path stands it in
with a fixed mask in-process; what is checked is the command's own job: the mask lands on the CT's
exact grid, the device given to TotalSegmentator is never MPS, and bad input is one line.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk
from cli_support import pancdiff, write_case
from pancdiff import cli
from pancdiff.commands import pancreas as command


def test_mask_is_written_on_the_cts_exact_grid(tmp_path, monkeypatch):
    ct_path, _ = write_case(tmp_path, "ct")
    seen = {}

    def stand_in_for_totalsegmentator(ct, source, *, fast, device):
        seen.update(source=source, fast=fast, device=device)
        mask = np.zeros(sitk.GetArrayFromImage(ct.image).shape, bool)
        mask[2:5, 10:20, 12:30] = True
        return mask

    monkeypatch.setattr("pancdiff.pancreas.pancreas_mask", stand_in_for_totalsegmentator)
    out = tmp_path / "pancreas.nii.gz"
    assert cli.main(["pancreas", str(ct_path), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert seen == {"source": "totalsegmentator", "fast": True, "device": "cpu"}
    ct, mask = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(out))
    assert mask.GetSize() == ct.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), ct.GetOrigin(), atol=1e-4)  # NIfTI stores float32
    np.testing.assert_allclose(mask.GetSpacing(), ct.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), ct.GetDirection(), atol=1e-6)
    array = sitk.GetArrayFromImage(mask)
    assert array.dtype == np.uint8 and int(array.sum()) == 3 * 10 * 18


def test_auto_device_for_totalsegmentator_is_cuda_or_cpu_never_mps():
    assert command._device("auto") in ("cuda", "cpu")
    assert command._device("cpu") == "cpu" and command._device("cuda") == "cuda"


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--out", "mask.txt"], "mask must be a .nii.gz"), (["--out", "m.nii.gz", "--device", "mps"], "invalid choice")],
)
def test_bad_options_are_one_line_exit_2(tmp_path, args, needle):
    ct_path, _ = write_case(tmp_path, "ct")
    run = pancdiff("pancreas", ct_path, *args)
    assert run.code == 2 and len(run.stderr_lines) == 1 and needle in run.stderr


@pytest.mark.skipif(importlib.util.find_spec("totalsegmentator") is not None, reason="TotalSegmentator installed")
def test_without_totalsegmentator_exit_3_and_say_how_to_install(tmp_path):
    ct_path, _ = write_case(tmp_path, "ct")
    run = pancdiff("pancreas", ct_path, "--out", tmp_path / "m.nii.gz")
    assert run.code == 3 and "TotalSegmentator" in run.stderr_lines[-1]
    assert not (tmp_path / "m.nii.gz").exists()
