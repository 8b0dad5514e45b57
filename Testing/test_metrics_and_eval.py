"""Metrics against hand-computed values; evaluation and benchmark report the promised figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.benchmark import run_benchmark
from pancdiff.config import MAP_KINDS, DetectConfig
from pancdiff.datasets.slice_folder import read_manifest
from pancdiff.detection import Detector
from pancdiff.errors import InputError
from pancdiff.evaluate import (
    EvalSet,
    Lesions,
    best_by,
    build_eval_set,
    choose_operating_point,
    choose_peak_sigma,
    choose_smoothing,
    evaluate,
    healthy_false_positives,
    low_attenuation_map,
    peak_in_tumor,
    raw_map_grid,
    results_markdown,
    saliency_raw,
    setting_maps,
    trivial_baselines,
)
from pancdiff.lesions import LesionConfig, insert_lesion
from pancdiff.metrics import auroc, average_precision, case_interval, dice, pearson
from pancdiff.networks import HEALTHY
from pancdiff.progress import QUIET
from pancdiff.weights import init_bundle
from scipy import ndimage


def test_metrics_match_hand_computed_values():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # ranking: 1 (pos), 0.8 (neg), 0.6 (pos): precisions at positives 1/1 and 2/3
    assert average_precision([1, 0, 1], [1.0, 0.8, 0.6]) == pytest.approx((1 + 2 / 3) / 2)
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    assert pearson([1, 2, 3], [2, 4, 6.5]) > 0.99


def test_inserted_lesion_is_dark_inside_its_mask_and_untouched_elsewhere():
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 0.45, np.float32)
    valid = np.zeros_like(image, bool)
    valid[10:54, 10:54] = True
    out, mask = insert_lesion(image, valid, rng)
    assert mask.any() and (out[mask] < 0.45 - 0.01).all()
    assert np.array_equal(out[~valid], image[~valid])
    assert low_attenuation_map(out[None], valid[None])[0][mask].mean() > 0.5


def test_lesions_are_centred_in_the_pancreas_and_stay_near_it():
    image = np.full((64, 64), 0.45, np.float32)
    valid = np.ones_like(image, bool)
    organ = np.zeros_like(valid)
    organ[40:52, 8:56] = True  # a strip: the pancreas
    near = ndimage.binary_dilation(organ, iterations=int(LesionConfig().organ_margin_mm) + 2)
    for seed in range(20):
        inserted = insert_lesion(image, valid, np.random.default_rng(seed), 1.0, organ=organ)
        assert inserted is not None
        out, mask = inserted
        assert mask.any() and not (mask & ~near).any(), seed
        assert np.abs(out[~near] - image[~near]).max() < 2 / 400  # under 2 HU beyond the margin


def test_lesion_sizes_and_contrasts_follow_the_config():
    image = np.full((96, 96), 0.45, np.float32)
    valid = np.ones_like(image, bool)
    cfg = LesionConfig(diameter_mm=(20.0, 20.0), contrast_hu=(40.0, 40.0), irregularity=0.0, heterogeneity=0.0,
                       elongation=1.0, edge_mm=(0.7, 0.7), organ_margin_mm=40.0)  # fmt: skip
    centre = np.zeros_like(valid)
    centre[45:51, 45:51] = True  # the centre lands here, so the whole disc is in view
    out, mask = insert_lesion(image, valid, np.random.default_rng(0), 1.0, cfg, organ=centre)
    assert 2 * np.sqrt(mask.sum() / np.pi) == pytest.approx(20.0, abs=2.0)
    assert (image - out).max() * 400 == pytest.approx(40.0, abs=1.0)  # window width 400 HU


def test_bright_lesions_follow_their_share_and_leave_dark_draws_unchanged():
    image = np.full((64, 64), 0.45, np.float32)
    valid = np.ones_like(image, bool)
    signs = []
    for seed in range(40):
        out, mask = insert_lesion(image, valid, np.random.default_rng(seed), 1.0, LesionConfig(bright_fraction=0.5))
        signs.append(np.sign(out[mask].mean() - 0.45))
        dark, _ = insert_lesion(image, valid, np.random.default_rng(seed), 1.0, LesionConfig(bright_fraction=0.0))
        default, _ = insert_lesion(image, valid, np.random.default_rng(seed), 1.0)
        assert np.array_equal(dark, default)  # no extra random draw at 0: seeded evaluation sets stay the same
    assert 10 <= signs.count(1.0) <= 30 and signs.count(1.0) + signs.count(-1.0) == 40
    with pytest.raises(ValueError, match="bright_fraction"):
        LesionConfig(bright_fraction=1.5)


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    folder = write_slice_folder(tmp_path_factory.mktemp("tc"), cases_per_class=2, slices_per_case=2, with_labels=True)
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    return bundle, build_eval_set(folder, bundle)


def test_case_intervals_resample_patients_not_slices():
    # two patients, one all 0, one all 1: resampling patients sees 0, 0.5 or 1 (interval 0-1); twenty
    # slices each resampled as if independent would give a narrow interval around 0.5
    values, cases = np.r_[np.zeros(20), np.ones(20)], ["a"] * 20 + ["b"] * 20
    assert case_interval(values, cases) == (0.0, 1.0)
    lo, hi = case_interval(values, [str(i) for i in range(40)])
    assert 0.3 < lo < 0.5 < hi < 0.7
    # the statistic is the slice-weighted mean, as the point figure; NaN slices (no zone) are left out
    assert case_interval(np.r_[0.2, 0.2, np.nan], ["a", "b", "b"]) == pytest.approx((0.2, 0.2))
    assert case_interval(np.array([np.nan]), ["a"])[0] != case_interval(np.array([np.nan]), ["a"])[0]


def test_evaluation_reports_every_promised_figure(eval_data):
    bundle, data = eval_data
    assert set(data.lesions) == {"real", "simulated"}
    assert len(data.lesions["simulated"]) == int((data.y == 0).sum()) and len(data.lesions["real"]) == 4
    cfg = DetectConfig(scale=2.0, noise_level=20, steps=2, device="cpu")
    r = evaluate(bundle, data, cfg, grid=((0.0, 2.0), (20,), (0.3,)))
    for key in ("accuracy", "auroc", "auroc_paired_t0", "auroc_paired_tN"):
        assert 0.0 <= r["classifier"][key] <= 1.0, key
    for name in ("real", "simulated"):
        loc = r["localization"][name]
        assert set(loc) == {"pancdiff", "no_guidance", "low_attenuation", "saliency", "trivial"}
        for key in ("dice", "auprc", "dice_best_threshold", "peak_in_tumor"):
            assert 0.0 <= loc["pancdiff"][key] <= 1.0
        assert loc["pancdiff"]["dice_best_threshold"] >= loc["pancdiff"]["dice"]
        lesions = data.lesions[name]
        assert loc["pancdiff"]["n_cases"] == len(set(lesions.cases)) and len(lesions.cases) == len(lesions)
        for key in ("dice", "peak_in_tumor"):
            lo, hi = loc["pancdiff"][f"{key}_ci"]
            assert 0.0 <= lo <= loc["pancdiff"][key] <= hi <= 1.0, key
        assert 0.0 < loc["trivial"]["prevalence"] < 1.0
    healthy = r["healthy"]["pancdiff"]
    assert 0.0 <= healthy["fp_fraction_ci"][0] <= healthy["fp_fraction"] <= healthy["fp_fraction_ci"][1] <= 1.0
    assert healthy["n_cases"] == len({c for c, y in zip(data.cases, data.y) if y == 0})
    assert "patients are resampled" in results_markdown(r) and "95 % interval over" in results_markdown(r)
    assert r["operating_point"]["scale"] == 2.0 and r["operating_point"]["guidance"] == "noisy"
    assert len(r["grid"]) == 2
    # the synthetic tumors are dark blobs: the low-attenuation baseline finds them, so the metrics work
    assert r["localization"]["real"]["low_attenuation"]["dice_best_threshold"] > 0.3
    assert "real lesions" in results_markdown(r) and "whole zone marked" in results_markdown(r)
    assert "classifier saliency at t = 0" in results_markdown(r) and 0 <= r["healthy"]["saliency"]["fp_fraction"] <= 1


def test_a_saliency_weight_adds_the_classifier_gradient_to_the_map_without_a_pass(eval_data):
    """max(guided map, w * saliency) inside the crop, the same confidence and the same pass count."""
    bundle, data = eval_data
    les = data.lesions["real"]
    plain = DetectConfig(scale=2.0, noise_level=20, steps=2, device="cpu", map_kind="guidance", min_anomaly=0.0)
    weighted = dataclasses.replace(plain, saliency_weight=0.01)
    a = Detector(bundle, plain).detect(les.x, les.valid, zone=les.zone)
    b = Detector(bundle, weighted).detect(les.x, les.valid, zone=les.zone)
    sal = saliency_raw(Detector(bundle, plain), les.x, les.valid, les.zone)
    assert np.allclose(b.anomaly, np.maximum(a.anomaly, 0.01 * sal), atol=1e-6)
    assert (b.anomaly > a.anomaly + 1e-6).any(), "the gradient shows where the guided map is weaker"
    assert np.allclose(a.tumor_probability, b.tumor_probability, atol=1e-6)
    assert a.evaluations_per_slice == b.evaluations_per_slice
    with pytest.raises(InputError, match="saliency weight"):
        DetectConfig(saliency_weight=-1.0)


def test_plain_reconstruction_row_is_scored_per_slice_whatever_the_operating_point(eval_data):
    """S = 0 is |x - x_hat|: a calibrated scale measured for a guidance map is not its scale (it flagged
    97 % of healthy pixels on the shipped bundle), so the row is normalized per slice."""
    bundle, data = eval_data
    base = DetectConfig(scale=2.0, noise_level=20, steps=2, device="cpu", map_kind="guidance", min_anomaly=0.0)
    calibrated = evaluate(bundle, data, dataclasses.replace(base, normalization="calibrated", map_scale=1e-6))
    per_slice = evaluate(bundle, data, base)
    assert calibrated["healthy"]["pancdiff"]["fp_fraction"] > 0.9, "that scale saturates the guidance map"
    assert calibrated["healthy"]["no_guidance"] == per_slice["healthy"]["no_guidance"]
    assert calibrated["localization"]["real"]["no_guidance"] == per_slice["localization"]["real"]["no_guidance"]
    assert "S = 0 (plain reconstruction, per slice)" in results_markdown(calibrated)
    with_saliency = evaluate(bundle, data, dataclasses.replace(base, saliency_weight=100.0))
    assert with_saliency["healthy"]["no_guidance"] == per_slice["healthy"]["no_guidance"], "S = 0 has no saliency"


def test_saliency_baseline_is_the_classifier_gradient_inside_the_crop(eval_data):
    """|d log p(healthy | x, 0) / dx| by autograd on the classifier itself, batch by batch, 0 outside the crop."""
    bundle, data = eval_data
    les = data.lesions["real"]
    detector = Detector(bundle, DetectConfig(device="cpu"))
    sal = saliency_raw(detector, les.x, les.valid, les.zone, batch=3)
    x = torch.from_numpy(les.x)[:, None].float().requires_grad_(True)
    logits = bundle.classifier(x, torch.zeros(len(x), dtype=torch.long), torch.from_numpy(les.zone)[:, None])
    torch.log_softmax(logits.float(), 1)[:, HEALTHY].sum().backward()
    expected = np.where(les.valid, x.grad[:, 0].abs().numpy(), 0.0)
    assert sal.shape == les.x.shape and np.allclose(sal, expected, atol=1e-6) and sal.max() > 0
    assert not sal[~les.valid].any()


def test_healthy_false_positives_are_also_reported_where_the_zone_is_the_pancreas(tmp_path):
    # one unoutlined healthy slice flagged everywhere (its zone is the whole crop), two outlined ones clean
    zone = np.ones((3, 8, 8), bool)
    zone[1:, :4] = False
    flagged = np.zeros(zone.shape, np.float32)
    flagged[0] = 1.0
    fp = healthy_false_positives(flagged, zone, 0.5, np.array([False, True, True]))
    assert fp["fp_fraction"] == pytest.approx(1 / 3) and fp["fp_fraction_outlined"] == 0.0
    assert (fp["n_slices"], fp["n_outlined"]) == (3, 2)
    assert healthy_false_positives(flagged, zone, 0.5, np.zeros(3, bool))["fp_fraction_outlined"] is None
    # by patient: the unoutlined slice is patient "a"'s only one, so the outlined figure has one patient
    by_case = healthy_false_positives(flagged, zone, 0.5, np.array([False, True, True]), ["a", "b", "b"])
    assert (by_case["n_cases"], by_case["n_cases_outlined"]) == (2, 1)
    assert by_case["fp_fraction_outlined_ci"] == (0.0, 0.0) and by_case["fp_fraction_ci"] == (0.0, 1.0)
    # a slice folder whose first healthy crop lost its pancreas outline
    folder = write_slice_folder(tmp_path / "tc", cases_per_class=2, slices_per_case=2, with_labels=True)
    manifest = folder / "manifest.csv"
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    first_healthy = next(i for i, line in enumerate(lines[1:], 1) if line.split(",")[header.index("tumor")] == "0")
    cells = lines[first_healthy].split(",")
    cells[header.index("labels")] = ""
    lines[first_healthy] = ",".join(cells)
    manifest.write_text("\n".join(lines) + "\n")
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    data = build_eval_set(folder, bundle)
    j = first_healthy - 1
    assert list(data.has_outline) == [i != j for i in range(len(data.y))]
    assert np.array_equal(data.zone[j], data.valid[j]) and data.zone[j + 1].sum() < data.valid[j + 1].sum()
    r = evaluate(bundle, data, DetectConfig(scale=2.0, noise_level=20, steps=2, device="cpu"))
    assert r["healthy"]["pancdiff"]["n_outlined"] == int(data.healthy.sum()) - 1
    assert r["healthy"]["low_attenuation"]["fp_fraction_outlined"] is not None
    assert r["healthy"]["saliency"]["fp_fraction_outlined"] is not None and ", saliency " in results_markdown(r)
    assert f"On the {int(data.healthy.sum()) - 1} of {int(data.healthy.sum())} healthy slices" in results_markdown(r)


def test_trivial_baselines_match_a_hand_computed_case():
    zone = np.zeros((1, 10, 10), bool)
    zone[0, :5] = True  # 50 pixels
    mask = np.zeros_like(zone)
    mask[0, :1] = True  # 10 pixels
    les = Lesions("real", np.zeros(zone.shape, np.float32), zone, mask, zone)
    t = trivial_baselines(les)
    assert t["prevalence"] == pytest.approx(0.2) and t["peak_in_tumor_chance"] == pytest.approx(0.2)
    assert t["whole_zone_dice"] == pytest.approx(2 * 10 / (50 + 10))
    peak = np.zeros(zone.shape, np.float32)
    peak[0, 0, 3] = 1.0
    elsewhere = np.zeros(zone.shape, np.float32)
    elsewhere[0, 3, 3] = 1.0  # in the zone, not in the tumor
    assert peak_in_tumor(peak, mask, zone) == 1.0 and peak_in_tumor(elsewhere, mask, zone) == 0.0


def test_peak_smoothing_is_chosen_by_peaks_in_the_tumor_and_prefers_the_smaller_on_a_tie():
    """Each slice has a large faint tumor and a small bright spot outside it: narrow smoothing peaks on
    the spot, wide smoothing on the tumor. With tumors only small and bright, every width ties."""
    zone = np.ones((2, 32, 32), bool)
    mask = np.zeros_like(zone)
    mask[:, 4:16, 4:16] = True
    raw = np.zeros(zone.shape, np.float32)
    raw[:, 4:16, 4:16] = 0.3
    raw[:, 23:26, 23:26] = 1.0
    cfg = DetectConfig(normalization="calibrated", map_scale=0.2, smooth_sigma_px=1.0, min_anomaly=0.0)
    data = EvalSet(x=raw, valid=zone, zone=zone, y=np.ones(2, int), cases=["a", "b"],
                   lesions={"real": Lesions("real", raw, zone, mask, zone)})  # fmt: skip
    sigma, rows = choose_peak_sigma({"real": raw}, data, cfg, (0.0, 1.0, 4.0, 6.0))
    by = {r["peak_sigma_px"]: r["peak_in_tumor_real"] for r in rows}
    assert by[0.0] == by[1.0] == 0.0 and by[4.0] == by[6.0] == 1.0 and sigma == 4.0
    spot = np.zeros_like(mask)
    spot[:, 23:26, 23:26] = True
    data.lesions = {"real": Lesions("real", raw, zone, spot, zone)}
    sigma, rows = choose_peak_sigma({"real": raw}, data, cfg, (0.0, 1.0))
    assert [r["peak_in_tumor"] for r in rows] == [1.0, 1.0] and sigma == 0.0


def test_benchmark_reports_passes_time_and_agreement(eval_data):
    bundle, data = eval_data
    fast = DetectConfig(scale=2.0, noise_level=12, steps=3, device="cpu")
    r = run_benchmark(bundle, data.x[:2], data.valid[:2], fast, sweep=(2,))
    assert r["evals_per_slice_reference"] == 3 * 12 + 1 and r["evals_per_slice_fast"] == 3 * 3 + 1
    for key in ("seconds_per_slice_reference", "seconds_per_slice_fast", "speedup_wall", "map_pearson", "map_dice"):
        assert np.isfinite(r[key]), key
    assert r["device"] == "cpu" and r["sweep"][0]["steps"] == 2
    same = run_benchmark(bundle, data.x[:1], data.valid[:1], dataclasses.replace(fast, steps=12))
    assert same["map_pearson"] == pytest.approx(1.0) and same["map_dice"] == pytest.approx(1.0)
    kinds = run_benchmark(
        bundle, data.x[:1], data.valid[:1], fast, (3, 12), solvers=("ddim", "dpm2m"), by_map_kind=True
    )
    rows = {(r["map_kind"], r["solver"], r["steps"]): r for r in kinds["by_map_kind"]}
    assert set(rows) == {(k, s, n) for k in MAP_KINDS for s in ("ddim", "dpm2m") for n in (3, 12)}
    assert rows["input", "ddim", 12]["map_pearson"] == pytest.approx(1.0)  # K = N with DDIM is the reference
    assert rows["guidance", "ddim", 3]["evals_per_slice"] == 4 * 3 and rows["input", "ddim", 3]["fewer_passes"] > 3


def test_operating_point_search_respects_the_false_positive_bound(eval_data):
    bundle, data = eval_data
    chosen, rows = choose_operating_point(bundle, data, scales=(0.0, 2.0), noises=(12,), steps=2, max_fp=0.02)
    assert {r["normalization"] for r in rows} == {"slice", "calibrated"}
    assert {r["guidance"] for r in rows if r["scale"] > 0} == {"noisy", "x0"}
    assert {r["map_kind"] for r in rows if r["scale"] > 0} == set(MAP_KINDS)
    assert all("dice_real" in r and "dice_simulated" in r for r in rows)
    allowed = [r for r in rows if r["fp_fraction"] <= 0.02] or rows
    best = max(allowed, key=lambda r: r["dice"])
    assert (chosen.scale, chosen.threshold, chosen.normalization, chosen.guidance, chosen.map_kind) == (
        best["scale"], best["threshold"], best["normalization"], best["guidance"], best["map_kind"]
    )  # fmt: skip
    if chosen.normalization == "calibrated":
        assert chosen.map_scale > 0


def test_the_smoothing_step_keeps_the_grids_choice_at_the_grids_smoothing(eval_data):
    """After the grid, the release re-chooses normalization, floor and threshold per heatmap smoothing by
    the grid's rule; offered only the grid's own smoothing, it must land on the grid's choice."""
    bundle, data = eval_data
    chosen, _ = choose_operating_point(bundle, data, (2.0,), (12,), 2, 0.02, guidances=("noisy",))
    raw = setting_maps(bundle, chosen, data, QUIET)
    again, _ = choose_smoothing(raw, data, chosen, (chosen.smooth_sigma_px,), 0.02)
    assert (again.normalization, again.min_anomaly, again.threshold) == (
        chosen.normalization, chosen.min_anomaly, chosen.threshold
    )  # fmt: skip
    assert again.map_scale == pytest.approx(chosen.map_scale, rel=1e-3)
    wider, rows = choose_smoothing(raw, data, chosen, (1.0, 4.0), 0.02)
    best = best_by(rows, "smooth_sigma_px", 0.02)
    assert [r["smooth_sigma_px"] for r in best] == [1.0, 4.0]
    winner = max(best, key=lambda r: (r["fp_fraction"] <= 0.02 or not any(b["fp_fraction"] <= 0.02 for b in best),
                                      r["dice"], -r["smooth_sigma_px"]))  # fmt: skip
    assert wider.smooth_sigma_px == winner["smooth_sigma_px"] and wider.threshold == winner["threshold"]


def test_operating_point_search_keeps_the_step_size_across_noise_levels(eval_data):
    # K is given at the lowest N; a larger N gets proportionally more steps, as detection gives a user
    bundle, data = eval_data
    _, rows = choose_operating_point(
        bundle, data, scales=(2.0,), noises=(6, 12), steps=2, max_fp=0.02, guidances=("noisy",), min_anomalies=(0.0,)
    )
    assert {(r["noise_level"], r["steps"]) for r in rows} == {(6, 2), (12, 4)}


def test_one_encoding_serves_every_scale(eval_data):
    """The latent depends on N only: maps from the grid equal separate detections per S."""
    bundle, data = eval_data
    x, v = data.x[:2], data.valid[:2]
    base = DetectConfig(noise_level=12, steps=3, device="cpu", smooth_sigma_px=0)
    grid = raw_map_grid(bundle, base, x, v, (0.0, 2.0), ("noisy", "x0"))
    for guidance in ("noisy", "x0"):
        for kind in MAP_KINDS:
            cfg = dataclasses.replace(base, scale=2.0, guidance=guidance, map_kind=kind)
            alone = Detector(bundle, cfg).detect(x, v).anomaly
            np.testing.assert_allclose(grid[(guidance, kind, 2.0)], alone, atol=1e-5)


def test_calibrated_maps_compare_across_slices():
    from pancdiff.detection import normalize_maps

    anomaly = np.zeros((2, 8, 8), np.float32)
    anomaly[0, 4, 4], anomaly[1, 4, 4] = 0.5, 0.05
    valid = np.ones_like(anomaly, bool)
    per_slice = normalize_maps(anomaly, valid, DetectConfig(smooth_sigma_px=0))
    calibrated = normalize_maps(
        anomaly, valid, DetectConfig(smooth_sigma_px=0, normalization="calibrated", map_scale=0.25)
    )
    assert per_slice[0].max() == per_slice[1].max() == 1.0  # the paper's: every slice peaks at 1
    assert calibrated[0].max() == 1.0 and calibrated[1].max() == pytest.approx(0.2)


def test_evaluation_reads_the_msd_layout_with_real_tumor_masks(tmp_path):
    from pancdiff.phantom import write_phantom_dataset

    root = write_phantom_dataset(tmp_path / "Task07", cases=4, seed=1, tumor_fraction=1.0)
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    data = build_eval_set(root, bundle, cases=None)
    real = data.lesions["real"]
    assert real.clean is None and len(real) > 0 and all(m.any() for m in real.mask)
    assert set(data.cases) <= {p.name.split(".")[0] for p in (root / "imagesTr").iterdir()}
    r = evaluate(bundle, data, DetectConfig(scale=1.0, noise_level=10, steps=1, device="cpu"))
    assert r["source"].startswith("MSD") and r["localization"]["real"]["pancdiff"]["n_slices"] == len(real)


def test_missing_data_folder_says_it_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        build_eval_set(tmp_path / "nope", init_bundle(seed=0, network=TINY_NETWORK))


def test_evaluate_on_a_folder_new_to_the_model_scores_all_its_cases_and_says_so(tmp_path):
    """Subprocess, as a user runs it: the bundled model never saw these cases, so none are dropped."""
    import json
    import subprocess
    import sys

    folder = write_slice_folder(tmp_path / "new", cases_per_class=1, slices_per_case=2, with_labels=True)
    run = subprocess.run(
        [sys.executable, "-m", "pancdiff", "--progress", "json", "evaluate", "--data", str(folder),
         "--out", str(tmp_path / "out"), "--scale", "1", "--noise", "8", "--steps", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    messages = [json.loads(line).get("message", "") for line in run.stdout.splitlines() if line.startswith("{")]
    assert any("scoring all of them" in m for m in messages), messages
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["cases"] == 2 and results["slices"] == 4


PANCREAS_TC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pancreas-tc"


@pytest.mark.shared_data
def test_real_outlines_of_pancreas_tc_land_inside_the_pancreas_zone():
    """The pixel labels of the real crops: tumor outlines on the canvas lie in the scoring zone, and
    lesions simulated in healthy crops are placed inside their pancreas."""
    if not (PANCREAS_TC / "manifest.csv").is_file():
        pytest.skip(f"shared test data not present at {PANCREAS_TC}")
    records = read_manifest(PANCREAS_TC)
    labelled = [r for r in records if r.labels is not None]
    assert len(labelled) == 1631 and sum(r.mask is not None for r in records) == 679
    cases = {"pancreas_032", "PANCREAS_0005"}
    data = build_eval_set(PANCREAS_TC, init_bundle(seed=0, network=TINY_NETWORK), cases)
    real, sim = data.lesions["real"], data.lesions["simulated"]
    assert len(real) > 0 and len(sim) > 0
    assert (real.mask & real.zone).sum() / real.mask.sum() > 0.95
    assert (sim.mask & sim.zone).sum() / sim.mask.sum() > 0.95
