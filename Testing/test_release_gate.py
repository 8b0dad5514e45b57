"""The release gate refuses a bundle below its quality floor, and says why."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.detection import evaluations_per_slice
from pancdiff.evaluate import build_eval_set
from pancdiff.progress import QUIET
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


def test_low_attenuation_baseline_gets_the_same_selection_rule(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", cases_per_class=1, slices_per_case=2, with_labels=True)
    data = build_eval_set(folder, init_bundle(seed=0, network=TINY_NETWORK))
    release = _release()
    loose, strict = release.low_attenuation_tuned(data, 1.0, 1.0), release.low_attenuation_tuned(data, 1.0, 0.02)
    for tuned in (loose, strict):
        assert 0.1 <= tuned["threshold"] <= 0.9 and 0.0 <= tuned["dice"] <= 1.0 and np.isfinite(tuned["dice"])
    assert loose["dice"] >= strict["dice"], "a false-positive bound can only cost the baseline Dice"
    if strict["fp_fraction"] <= 0.02:
        assert strict["threshold"] >= loose["threshold"] or strict["normalization"] != loose["normalization"]


def test_release_takes_the_fewest_steps_that_follow_the_paper_exact_map(tmp_path):
    """K is chosen after S and N: the fewest steps at r >= the floor; none at the floor keeps the grid's K."""
    from pancdiff.config import DetectConfig

    folder = write_slice_folder(tmp_path / "tc", cases_per_class=1, slices_per_case=2, with_labels=True)
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    data = build_eval_set(folder, bundle)
    release = _release()
    cfg = DetectConfig(scale=2.0, noise_level=16, steps=8, map_kind="guidance", threshold=0.5)
    anything, record = release.choose_steps(bundle, cfg, data, [1, 2, 4], 8, -1.0, QUIET)
    # Candidates are K at the lowest N (8), scaled to the chosen N (16) as detection scales them.
    assert [r["steps"] for r in record["rows"]] == [2, 4, 8] and anything.steps == 2 == record["chosen_steps"]
    passes = [r["evals_per_slice"] for r in record["rows"]]
    assert passes == sorted(passes) and passes[-1] == evaluations_per_slice(cfg)
    nothing, record = release.choose_steps(bundle, cfg, data, [1, 2, 4], 8, 1.01, QUIET)
    assert nothing == cfg and record["chosen_steps"] == 8, "no K reaches the floor: the grid's K stays"
    assert "- Steps: K = 8" in release.steps_lines(record)[0]
    assert release.fewer_steps_flag(record) == "--fewer-steps 1,2,4 --min-fidelity 1.01 "
    assert release.choose_steps(bundle, cfg, data, [8, 9], 8, 0.0, QUIET) == (cfg, None), "nothing smaller to try"
    assert release.steps_lines(None) == [] and release.fewer_steps_flag(None) == ""
    # A grid whose own K was N chose the paper-exact run; a smaller K still takes the release's fast way.
    exact = DetectConfig(scale=2.0, noise_level=8, steps=4, map_kind="guidance").at(8, 8)
    fast = DetectConfig(steps=4, grid_power=1.5, guidance_step="integrated")
    assert exact.guidance_step == "paper"
    fewer, _ = release.choose_steps(bundle, exact, data, [2], 8, -1.0, QUIET, fast)
    assert (fewer.steps, fewer.guidance_step, fewer.grid_power) == (2, "integrated", 1.5)
    assert release.step_counts("3, 4") == [3, 4] and release.step_counts("") == []
    for bad in ("3,a", "0"):
        with pytest.raises(ValueError):
            release.step_counts(bad)


def test_release_adds_the_saliency_only_by_its_margin(tmp_path):
    """max(guided, w saliency) is taken when it raises the tuning objective by the margin, else nothing changes."""
    from pancdiff.config import DetectConfig
    from pancdiff.evaluate import setting_maps

    folder = write_slice_folder(tmp_path / "tc", cases_per_class=1, slices_per_case=2, with_labels=True)
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    data = build_eval_set(folder, bundle)
    release = _release()
    cfg = DetectConfig(scale=2.0, noise_level=8, steps=2, map_kind="guidance", min_anomaly=0.0, device="cpu")
    raw = setting_maps(bundle, cfg, data, QUIET)
    same, maps, record = release.choose_saliency(bundle, cfg, data, raw, 1.0, 0.02)
    assert same == cfg and maps is raw and not record["taken"] and record["weight"] > 0
    taken, maps, record = release.choose_saliency(bundle, cfg, data, raw, -1.0, 0.02)
    assert record["taken"] and taken.saliency_weight == record["weight"]
    assert all((maps[name] >= raw[name]).all() for name in raw), "the max never lowers the guided map"
    assert "- Saliency: taken" in release.saliency_lines(record)[0] and release.saliency_lines(None) == []


def test_release_writes_a_verified_bundle_chosen_on_the_tuning_half(tmp_path, monkeypatch):
    """End to end on tiny networks: two short runs, the tuning grid, the test half, the card."""
    import dataclasses
    import json
    import sys

    from pancdiff.train import TrainConfig, train
    from pancdiff.weights import load_bundle

    folder = write_slice_folder(tmp_path / "tc", cases_per_class=4, slices_per_case=2, with_labels=True)
    cfg = TrainConfig(iterations=2, batch_size=4, checkpoint_every=2, validate_every=2, warmup=1,
                      network=dataclasses.replace(TINY_NETWORK, classifier_pooling="lse"), threads=1,
                      val_fraction=0.5, paired=True)  # fmt: skip
    train("diffusion", folder, tmp_path / "diffusion", cfg)
    train("classifier", folder, tmp_path / "classifier", cfg)
    release = _release()
    monkeypatch.setattr(release, "gate", lambda *a, **k: [])  # the gate has its own test; here: the writing
    out = tmp_path / "Models"
    monkeypatch.setattr(sys, "argv", [
        "release_models.py", "--diffusion", str(tmp_path / "diffusion"), "--classifier", str(tmp_path / "classifier"),
        "--data", str(folder), "--out", str(out), "--steps", "2", "--scales", "2", "--noises", "8",
        "--fewer-steps", "1", "--smooth-sigmas", "1,3", "--known-limits", str(tmp_path / "limits.md"),
        "--trained-on", "UNet on one NVIDIA H200, classifier on a CPU", "--tuning-json", str(tmp_path / "tuning.json"),
        "--saliency-margin", "-1",
    ])  # fmt: skip
    with pytest.raises(SystemExit, match="limits.md: --known-limits file not found"):
        release.main()
    assert not out.exists(), "a bad argument is refused before anything is written"
    limits = "- Finds only dark lesions, −118 to −17 HU (measured after the last release).\n"
    (tmp_path / "limits.md").write_text(limits, encoding="utf-8")  # non-ASCII: the card is written as UTF-8
    assert release.main() == 0
    bundle = load_bundle(out)
    card = json.loads((out / "model.json").read_text())
    assert bundle.network.classifier_pooling == "lse"
    assert set(card["split"]["tune_cases"]).isdisjoint(card["split"]["test_cases"])
    run_split = json.loads((tmp_path / "classifier" / "split.json").read_text(encoding="utf-8"))
    meta, c_cfg, step, split = release.classifier_from_bundle(card)  # --classifier-from: the run, from its bundle
    assert (meta, c_cfg, step) == release.load_run(tmp_path / "classifier")
    assert split == run_split
    assert card["release_gate"]["passed"] and card["validation"]["split_half"].startswith("test half")
    chosen = bundle.operating_point
    picked = card["operating_point_selection"]["chosen"]
    assert (picked["guidance"], picked["map_kind"], picked["scale"], picked["threshold"]) == (
        chosen.guidance, chosen.map_kind, chosen.scale, chosen.threshold
    )  # fmt: skip
    assert len(card["operating_point_selection"]["grid"]) < 200, "one row per setting, not per threshold"
    tuning = json.loads((tmp_path / "tuning.json").read_text(encoding="utf-8"))  # --tuning-json: the whole grid
    assert release.best_per_setting(tuning["grid"]) == card["operating_point_selection"]["grid"]
    assert len(tuning["grid"]) > len(card["operating_point_selection"]["grid"]) and tuning["chosen"] == picked
    peak = card["operating_point_selection"]["peak"]
    assert (
        chosen.peak_sigma_px
        == peak["chosen_peak_sigma_px"]
        == max(peak["rows"], key=lambda r: (r["peak_in_tumor"], -r["peak_sigma_px"]))["peak_sigma_px"]
    )
    assert card["operating_point"]["peak_sigma_px"] == chosen.peak_sigma_px
    fid = card["operating_point_selection"]["fidelity"]  # the fast setting against paper-exact, at the choice
    assert fid["slices"] > 0 and -1 <= fid["map_pearson"] <= 1 and fid["evals_per_slice_reference"] > 0
    assert fid["evals_per_slice_fast"] == evaluations_per_slice(chosen)
    steps = card["operating_point_selection"]["steps"]  # K chosen after S and N, before the smoothing
    assert [r["steps"] for r in steps["rows"]] == [1, 2] and chosen.steps == steps["chosen_steps"] == picked["steps"]
    assert "--steps 2 --fewer-steps 1 --min-fidelity 0.95 --saliency-margin -1.0 " in (out / "MODEL_CARD.md").read_text(
        encoding="utf-8"
    )
    assert "--saliency-margin -1.0 --smooth-sigmas 1,3 " in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    saliency = card["operating_point_selection"]["saliency"]  # a margin of -1 always takes it
    assert saliency["taken"] and chosen.saliency_weight == saliency["weight"] > 0
    assert "- Saliency: taken, w = " in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    smoothing = card["operating_point_selection"]["smoothing"]  # chosen after the grid, by the grid's rule
    by_sigma = smoothing["best_by_smoothing"]
    assert [r["smooth_sigma_px"] for r in by_sigma] == [1.0, 3.0]
    assert chosen.smooth_sigma_px == smoothing["chosen_smooth_sigma_px"] == picked["smooth_sigma_px"]
    assert picked["dice"] == max(by_sigma, key=lambda r: (r["fp_fraction"] <= 0.02, r["dice"]))["dice"]
    assert chosen.map_scale == picked["map_scale"] and chosen.threshold == picked["threshold"]
    assert card["validation"]["operating_point"]["peak_sigma_px"] == chosen.peak_sigma_px
    for name in ("MODEL_CARD.md", "validation_grid.png", "training/classifier.json", "training/diffusion.json"):
        assert (out / name).is_file(), name
    assert "Release gate" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Tuning mean peak-in-tumor by sigma: 1 px" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Tuning objective by smoothing: 1 px" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "- Faithfulness: the map at this setting against the paper-exact run" in (out / "MODEL_CARD.md").read_text(
        encoding="utf-8"
    )
    assert limits.strip() in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    text = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "- Hardware: UNet on one NVIDIA H200, classifier on a CPU." in text
    assert "warm-started" not in text, "neither run started from earlier weights"
    assert "Finds only dark lesions" in card["known_limits"]
    cal = card["confidence_calibration"]
    assert (bundle.calibration.a, bundle.calibration.b) == (cal["a"], cal["b"]) and bundle.calibration.a > 0
    assert {"tuning", "test"} <= set(cal) and "ece_calibrated" in cal["test"]
    domain = card["input_domain"]  # the texture range every detection checks its CT against
    low, high = domain["fine_texture_hu"]
    assert domain["canvases"] > 0 and low <= domain["median_hu"] <= high
    assert "- Input domain: fine texture" in text
    assert load_bundle(out).card["input_domain"] == domain
    argv = sys.argv[:]  # the release's choices, redone from the bundle alone (its run folders need not exist)
    for flag, value in (("--diffusion", "--unet-from"), ("--classifier", "--classifier-from")):
        at = argv.index(flag)
        argv[at : at + 2] = [value, str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--tune-only"])
    (tmp_path / "tuning.json").unlink()
    assert release.main() == 0
    assert json.loads((tmp_path / "tuning.json").read_text(encoding="utf-8"))["chosen"] == picked
