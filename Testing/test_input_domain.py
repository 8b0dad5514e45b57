"""The input-domain check: a CT's fine texture in the pancreas against the range the release measured,
and the warning it puts next to the confidence in summary.json, the report and the Slicer module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import synthetic_volume
from pancdiff.input_domain import canvas_fine_texture_hu, check, fine_texture_hu, training_range
from pancdiff.pipeline import confidence_note, detect_volume, model_info, write_results
from pancdiff.weights import init_bundle
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "PancDiffSlicer"))
from PancDiffSlicerLib import contract  # noqa: E402

WINDOW = (-150.0, 250.0)


def _textured(sigma_hu: float, smooth_px: float, n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, sigma_hu / 400, (n, 40, 40))
    x = 0.5 + np.stack([ndimage.gaussian_filter(m, smooth_px) if smooth_px else m for m in noise])
    zone = np.zeros(x.shape, bool)
    zone[:, 10:30, 10:30] = True
    return x.astype(np.float32), zone


def test_texture_is_measured_in_hu_and_falls_with_smoothing():
    sharp, zone = _textured(20.0, 0.0)
    smooth, _ = _textured(20.0, 1.0)
    v_sharp, v_smooth = fine_texture_hu(sharp, zone, WINDOW), fine_texture_hu(smooth, zone, WINDOW)
    assert 12 < v_sharp < 20  # white noise of 20 HU, less the part a 1-px Gaussian keeps
    assert v_smooth < 0.3 * v_sharp
    assert fine_texture_hu(sharp, zone, (-50.0, 150.0)) == pytest.approx(v_sharp / 2, rel=1e-5)
    tiny = np.zeros_like(zone)
    tiny[:, :5, :5] = True  # 25 pixels: too few to measure
    assert np.isnan(canvas_fine_texture_hu(sharp, tiny, WINDOW)).all()
    assert fine_texture_hu(sharp, tiny, WINDOW) is None


def test_the_range_and_the_check():
    x, zone = _textured(20.0, 0.0, n=50)
    domain = training_range(x, zone, WINDOW)
    low, high = domain["fine_texture_hu"]
    assert low <= domain["median_hu"] <= high and domain["canvases"] == 50
    inside = check(domain["median_hu"], domain)
    assert inside["inside"] is True and "warning" not in inside
    smoother = check(low / 2, domain)
    assert smoother["inside"] is False and "smoother" in smoother["warning"]
    assert "confidence is not to be trusted" in smoother["warning"] and "more healthy tissue" in smoother["warning"]
    grainier = check(high * 2, domain)["warning"]
    assert "grainier" in grainier and "not validated" in grainier and "more healthy tissue" not in grainier
    assert check(10.0, None)["inside"] is None and check(None, domain)["inside"] is None
    with pytest.raises(ValueError, match="zone"):
        training_range(x, np.zeros_like(zone), WINDOW)


def test_a_ct_outside_the_cards_range_is_flagged_in_every_output(tmp_path):
    torch.set_num_threads(1)
    ct, pancreas = synthetic_volume()
    bundle = init_bundle(seed=0)
    settings = {"steps": 2, "noise_level": 20, "device": "cpu"}
    det = detect_volume(ct, pancreas, bundle, settings)
    assert det.fine_texture_hu is not None and det.fine_texture_hu > 0
    plain = write_results(tmp_path, ct, pancreas, det, model_info(bundle))
    assert plain["input_domain"]["inside"] is None and "warning" not in plain["input_domain"]

    far = det.fine_texture_hu * 3  # a training range this CT lies well below
    bundle.card = {"input_domain": {"fine_texture_hu": [far, far * 2], "median_hu": far * 1.5, "canvases": 9}}
    (tmp_path / "b").mkdir()
    summary = write_results(tmp_path / "b", ct, pancreas, det, model_info(bundle))
    assert summary["input_domain"]["inside"] is False and "smoother" in summary["input_domain"]["warning"]
    on_disk = json.loads((tmp_path / "b" / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["input_domain"] == summary["input_domain"]
    assert "WARNING, this CT is smoother" in confidence_note(0.9, model_info(bundle), summary["input_domain"])
    on_disk["model"]["untrained"] = False  # random weights say only that; a trained model's result says this
    text = contract.confidenceText(contract.summaryFromDict(on_disk), {})
    assert "WARNING: this CT is smoother than the training data" in text
    assert "WARNING" not in contract.confidenceText(contract.summaryFromDict({**on_disk, "input_domain": plain}), {})


def test_the_terminal_line_and_the_json_result_carry_the_warning():
    from pancdiff.commands.detect import _headline, _result_line

    summary = {"overall_confidence": 0.9, "peaks": [], "candidate_voxels": 0,
               "input_domain": check(9.6, {"fine_texture_hu": [17.7, 33.4]})}  # fmt: skip
    line = _result_line(summary, Path("out"))
    assert line.splitlines()[-1].startswith("WARNING: this CT is smoother than the training data")
    assert _headline(summary)["input_domain"]["inside"] is False
    summary["input_domain"] = check(23.0, {"fine_texture_hu": [17.7, 33.4]})
    assert "WARNING" not in _result_line(summary, Path("out"))
