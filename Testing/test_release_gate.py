"""The release gate refuses a bundle below its quality floor, and says why."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.evaluate import build_eval_set
from pancdiff.weights import init_bundle

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "release_models.py"


def _release():
    spec = importlib.util.spec_from_file_location("release_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gate_passes_only_above_both_floors():
    gate = _release().gate
    baseline = {"dice": 0.20, "threshold": 0.5}
    assert gate({"auroc_paired_t0": 0.92}, 0.30, baseline, 0.85) == []
    low_auroc = gate({"auroc_paired_t0": 0.80}, 0.30, baseline, 0.85)
    assert len(low_auroc) == 1 and "0.800 < 0.85" in low_auroc[0]
    below_baseline = gate({"auroc_paired_t0": 0.92}, 0.19, baseline, 0.85)
    assert len(below_baseline) == 1 and "low-attenuation" in below_baseline[0]
    assert len(gate({}, 0.0, baseline, 0.85)) == 2, "a missing figure can never pass"


def test_low_attenuation_baseline_is_tuned_on_the_same_half(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", cases_per_class=1, slices_per_case=2, with_labels=True)
    data = build_eval_set(folder, init_bundle(seed=0, network=TINY_NETWORK))
    tuned = _release().low_attenuation_tuned(data, 1.0)
    assert 0.1 <= tuned["threshold"] <= 0.9 and 0.0 < tuned["dice"] <= 1.0
    assert np.isfinite(tuned["dice"])
