"""The confidence users read: Platt scaling fitted, stored with the bundle, applied, and explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_support import TINY_NETWORK
from pancdiff.calibration import (
    PlattScaling,
    calibration_record,
    expected_calibration_error,
    fit_platt,
    logit_difference,
)
from pancdiff.config import DetectConfig
from pancdiff.detection import Detector
from pancdiff.pipeline import confidence_note, model_info
from pancdiff.weights import init_bundle, load_bundle, save_bundle


def test_fit_recovers_the_scaling_that_made_the_labels():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 3, 20000)
    y = rng.random(d.size) < PlattScaling(0.4, -1.0).probability(d)
    fitted = fit_platt(d, y)
    assert fitted.a == pytest.approx(0.4, abs=0.03) and fitted.b == pytest.approx(-1.0, abs=0.06)
    before, after = PlattScaling().probability(d), fitted.probability(d)
    assert expected_calibration_error(after, y) < 0.02 < expected_calibration_error(before, y)
    record = calibration_record(fitted, d, y)
    assert record["ece_calibrated"] < record["ece_softmax"] and record["brier_calibrated"] < record["brier_softmax"]


def test_the_slope_stays_positive_so_rankings_never_flip():
    d = np.linspace(-3, 3, 200)
    assert fit_platt(d, d < 0).a > 0  # labels anti-correlated with the score: a shrinks toward 0, never below
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(d, np.ones_like(d))


def test_identity_is_the_softmax_and_numpy_agrees_with_torch():
    logits = torch.randn(50, 2)
    d = logits[:, 1] - logits[:, 0]
    torch.testing.assert_close(PlattScaling().probability(d), torch.softmax(logits, 1)[:, 1])
    p = torch.softmax(logits, 1)[:, 1].numpy()
    np.testing.assert_allclose(logit_difference(p), d.numpy(), atol=1e-4)
    cal = PlattScaling(0.5, 0.3)
    np.testing.assert_allclose(cal.probability(d).numpy(), cal.probability(d.numpy()), rtol=1e-5)


def test_a_bundle_carries_its_calibration_and_detection_applies_it(tmp_path):
    bundle = init_bundle(seed=1, network=TINY_NETWORK)
    x = torch.rand(4, 1, TINY_NETWORK.image_size, TINY_NETWORK.image_size)
    plain = Detector(bundle, DetectConfig(device="cpu")).tumor_probability(x)
    bundle.calibration = PlattScaling(0.5, 0.3)
    save_bundle(bundle, tmp_path, {"confidence_calibration": {"test": {"ece_calibrated": 0.04}}})
    loaded = load_bundle(tmp_path)
    assert loaded.calibration == PlattScaling(0.5, 0.3)
    p = Detector(loaded, DetectConfig(device="cpu")).tumor_probability(x)
    expected = PlattScaling(0.5, 0.3).probability(torch.logit(plain.double())).float()
    torch.testing.assert_close(p, expected, atol=1e-5, rtol=1e-4)
    info = model_info(loaded)
    assert info["confidence_calibrated"] and info["confidence_ece"] == 0.04
    assert "calibration error 0.04" in confidence_note(0.7, info)


def test_an_uncalibrated_bundle_says_so():
    info = model_info(init_bundle(seed=1, network=TINY_NETWORK))
    assert not info["confidence_calibrated"] and info["confidence_ece"] is None
    note = confidence_note(0.7, {**info, "classifier_auroc": 0.8})
    assert "not a calibrated probability" in note
