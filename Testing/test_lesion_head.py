"""The lesion head: it runs only where the map student runs, its map is the documented mean, the guided map
alone stands in elsewhere in the same units, bundles keep it verified, and the release takes it by its rule."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.config import DetectConfig
from pancdiff.detection import Detector, evaluations_per_slice
from pancdiff.errors import WeightsError
from pancdiff.evaluate import build_eval_set, setting_maps
from pancdiff.lesion_head import LesionHeadConfig, combined_map, fallback_map, head_fits, head_probability
from pancdiff.map_student import StudentConfig, build_student
from pancdiff.progress import QUIET
from pancdiff.weights import HEAD_FILE, init_bundle, load_bundle, save_bundle, save_state

CFG = DetectConfig(scale=2.0, noise_level=8, steps=4, map_kind="guidance", saliency_weight=0.5, min_anomaly=0.0,
                   device="cpu", normalization="calibrated", map_scale=0.05, threshold=0.5)  # fmt: skip
ON = dataclasses.replace(CFG, map_student=True)
SETTING = dict(replaces_steps=CFG.steps, scale=CFG.scale, noise_level=CFG.noise_level, guidance=CFG.guidance,
               map_kind=CFG.map_kind, saliency_weight=CFG.saliency_weight, unit=CFG.map_scale, channels=(4, 8))


def _head(**changes) -> LesionHeadConfig:
    return LesionHeadConfig(**{**SETTING, "steps": 2, "guided_unit": 0.04, "head_unit": 0.5, "fallback_gain": 0.8,
                               **changes})


def _bundle(seed: int = 0, head: LesionHeadConfig | None = None):
    bundle = init_bundle(seed=seed, network=TINY_NETWORK)
    torch.manual_seed(seed)
    bundle.student_config = StudentConfig(steps=2, **SETTING)
    bundle.student = build_student(bundle.student_config).eval()
    bundle.head_config = head or _head()
    bundle.head = build_student(bundle.head_config).eval()
    return bundle


def _canvases(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.random((2, 16, 16), dtype=np.float32)
    valid = np.ones_like(x, bool)
    valid[:, :, :3] = False
    zone = valid.copy()
    zone[:, :4] = False
    return x, valid, zone


def test_the_head_fits_only_where_the_student_runs():
    student, head = StudentConfig(steps=2, **SETTING), _head()
    assert head_fits(head, student, ON)
    assert not head_fits(head, student, CFG), "map_student False: neither learned part runs"
    assert not head_fits(head, None, ON), "no student: no head"
    assert not head_fits(None, student, ON)
    for change in ({"scale": 3.0}, {"noise_level": 16}, {"guidance": "x0"}, {"saliency_weight": 0.25}):
        assert not head_fits(head, student, dataclasses.replace(ON, **change)), change
    assert not head_fits(_head(steps=3), student, ON), "a head trained on another K's map"
    assert not head_fits(head, student, ON.paper_exact())


def test_head_config_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="inputs must be among"):
        LesionHeadConfig(inputs=("x", "texture"), saliency_weight=1.0)
    for name in ("unit", "guided_unit", "head_unit", "fallback_gain"):
        with pytest.raises(ValueError, match=name):
            LesionHeadConfig(saliency_weight=1.0, **{name: 0.0})


def test_detector_averages_the_calibrated_head_into_the_map_and_falls_back_in_the_same_units():
    bundle = _bundle()
    x, valid, zone = _canvases()
    det = Detector(bundle, ON)
    result = det.detect(x, valid, zone=zone)
    assert det.head is not None
    assert result.evaluations_per_slice == evaluations_per_slice(dataclasses.replace(CFG, steps=2)) + 2
    # the same run without the head: the student's map, max with the saliency
    without = _bundle()
    without.head = without.head_config = None
    plain = Detector(without, ON).detect(x, valid, zone=zone)
    coarse = Detector(without, dataclasses.replace(CFG, steps=2)).map_grid(x, valid, [2.0], with_probability=True,
                                                                            zone=zone)  # fmt: skip
    arrays = {"x": x, "valid": valid, "zone": zone, "saliency": coarse["saliency"],
              "map": coarse["anomaly"][("noisy", "guidance", 2.0)]}  # fmt: skip
    p = head_probability(bundle.head, bundle.head_config, arrays)
    assert p.min() >= 0 and p.max() <= 1 and not p[~valid].any()
    want = (plain.anomaly / 0.04 + p / 0.5) / 2
    np.testing.assert_allclose(result.anomaly, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.anomaly, combined_map(plain.anomaly, p, bundle.head_config), rtol=1e-6)
    np.testing.assert_allclose(result.guided, plain.anomaly / 0.04 * 0.8, rtol=1e-6)
    # another S: the K-step decode, the guided map alone in the heatmap's units
    elsewhere = dataclasses.replace(ON, scale=3.0)
    moved = Detector(bundle, elsewhere).detect(x, valid, zone=zone)
    k_step = Detector(init_bundle(seed=0, network=TINY_NETWORK), elsewhere).detect(x, valid, zone=zone)
    np.testing.assert_allclose(moved.anomaly, fallback_map(k_step.anomaly, bundle.head_config), rtol=1e-6)
    np.testing.assert_array_equal(moved.anomaly, moved.guided)
    assert moved.evaluations_per_slice == evaluations_per_slice(elsewhere)


def test_a_bundle_keeps_its_head_and_refuses_a_swapped_or_orphan_one(tmp_path):
    bundle = _bundle()
    out = save_bundle(bundle, tmp_path / "with", {"model_id": "t"})
    loaded = load_bundle(out)
    assert loaded.head_config == bundle.head_config and HEAD_FILE in loaded.sha256
    for a, b in zip(loaded.head.state_dict().values(), bundle.head.state_dict().values()):
        assert torch.equal(a, b)
    save_state(_bundle(seed=1).head, out / HEAD_FILE)
    with pytest.raises(WeightsError, match="does not match model.json"):
        load_bundle(out)
    (out / HEAD_FILE).unlink()
    with pytest.raises(WeightsError, match="weight file missing"):
        load_bundle(out)
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    card["lesion_head"]["head_unit"] = 0
    (out / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(WeightsError, match="lesion_head section is not a valid lesion head"):
        load_bundle(out)
    orphan = _bundle()
    orphan.student = orphan.student_config = None
    with pytest.raises(WeightsError, match="needs the map_student"):
        load_bundle(save_bundle(orphan, tmp_path / "orphan", {}))


def _release():
    spec = importlib.util.spec_from_file_location("release_models", Path(__file__).parents[1] / "scripts" /
                                                  "release_models.py")  # fmt: skip
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    return release


def test_release_takes_the_head_by_its_rule(tmp_path):
    release = _release()
    folder = write_slice_folder(tmp_path / "tc", cases_per_class=1, slices_per_case=2, with_labels=True)
    bundle = _bundle()
    head = (bundle.head_config, bundle.head)
    bundle.head = bundle.head_config = None
    data = build_eval_set(folder, bundle)
    on = dataclasses.replace(ON, smooth_sigma_px=1.0)
    raw = setting_maps(bundle, on, data, QUIET)
    rows = release.choose_smoothing(raw, data, on, (1.0,), 0.02)[1]
    # a margin no head can reach: refused, the bundle unchanged
    same, maps, got_rows, record = release.choose_head(bundle, on, data, raw, rows, head, (1.0,), 10.0, 0.02, QUIET)
    assert not record["taken"] and same is on and maps is raw and got_rows is rows and bundle.head is None
    assert "- Lesion head: not taken." in release.head_lines(record)[0]
    # any change accepted: taken, the units measured on the healthy slices, the fallback gain set
    taken, maps, _, record = release.choose_head(bundle, on, data, raw, rows, head, (1.0,), -10.0, 0.02, QUIET)
    g, w = record["rows"]["guided"], record["rows"]["with head"]
    assert record["taken"] == (w.get("dice_real", 0.0) >= g.get("dice_real", 0.0))
    assert record["taken"], "these seeds: real Dice does not fall (the refusal is tested above)"
    assert bundle.head is head[1] and taken.map_student
    cfg = bundle.head_config
    assert cfg.guided_unit == record["guided_unit"] > 0 and cfg.head_unit == record["head_unit"] > 0
    h = data.healthy
    result = Detector(bundle, taken).detect(data.x[h], data.valid[h], zone=data.zone[h])
    np.testing.assert_allclose(result.anomaly, maps["healthy"], rtol=1e-4, atol=1e-6)
    # the guided map alone, in the heatmap's units, is calibrated as the heatmap is
    alone = release.calibrate_map_scale(result.guided, data.zone[h], taken.smooth_sigma_px)
    assert alone == pytest.approx(taken.map_scale, rel=1e-4)
    assert "--lesion-head HEAD_DIR" in release.head_flag(record)
    assert "- Lesion head: taken." in release.head_lines(record)[0]
    bundle.head = bundle.head_config = None
    other = (dataclasses.replace(head[0], scale=7.0), head[1])
    same, maps, _, record = release.choose_head(bundle, on, data, raw, rows, other, (1.0,), -10.0, 0.02, QUIET)
    assert not record["taken"] and "another setting" in record["why_not"] and maps is raw
    assert release.head_lines(None) == [] and release.head_flag(None) == ""


def test_the_pipeline_says_when_the_head_ran_and_never_runs_it_outside_the_input_domain():
    from cli_support import synthetic_volume
    from pancdiff.pipeline import detect_volume, learned_parts

    torch.set_num_threads(1)
    ct, pancreas = synthetic_volume()
    op = dataclasses.replace(ON, noise_level=20)
    setting = {**SETTING, "noise_level": 20}
    bundle = init_bundle(seed=0)
    bundle.operating_point = op
    bundle.student_config = StudentConfig(steps=2, **setting)
    bundle.student = build_student(bundle.student_config).eval()
    bundle.head_config = LesionHeadConfig(**{**setting, "steps": 2})
    bundle.head = build_student(bundle.head_config).eval()
    inside = detect_volume(ct, pancreas, bundle)
    assert inside.map_student and inside.lesion_head
    assert inside.evaluations_per_slice == evaluations_per_slice(dataclasses.replace(op, steps=2)) + 2
    assert learned_parts(inside) == " (map student + lesion head)"
    # the report's |x - x_hat| panel is that, in intensity, not the heatmap's calibrated units
    from pancdiff.pipeline import _report_row, report_plan

    item = report_plan(inside, [])[0]
    row = _report_row(inside, item, pancreas, None)
    tile = next(t for t in range(len(inside.canvases)) if np.array_equal(inside.canvases[t], row.canvas))
    want = np.abs(inside.canvases[tile] - inside.reconstructions[tile]) * inside.tile_valid[tile]
    np.testing.assert_allclose(row.anomaly, want, atol=1e-7)
    assert not np.allclose(row.anomaly, inside.tile_anomaly[tile]), "the map itself is in other units"
    far = inside.fine_texture_hu * 3
    bundle.card = {"input_domain": {"fine_texture_hu": [far, far * 2]}}
    outside = detect_volume(ct, pancreas, bundle)
    assert not outside.map_student and not outside.lesion_head and learned_parts(outside) == ""
    assert outside.evaluations_per_slice == evaluations_per_slice(op)


def test_the_study_folders_the_card_names_hold_the_shipped_learned_parts():
    """The reproduce line's --map-student and --lesion-head folders load as the release loads them, and
    their weights are the bundle's (the card's SHA-256), so the release can be run again from the repository."""
    from pancdiff.weights import STUDENT_FILE, load_bundle, sha256_file

    release = _release()
    root = Path(__file__).parents[1]
    shipped = load_bundle(None, "cpu")
    for folder, weights, kind in ((root / "model_runs/20261129-map-student/map_student", STUDENT_FILE, StudentConfig),
                                  (root / "model_runs/20261130-lesion-head/lesion_head", HEAD_FILE, LesionHeadConfig)):
        cfg, net = release.load_part_folder(folder, weights, kind)
        assert type(cfg) is kind and sha256_file(folder / weights) == shipped.sha256[weights]
        assert sum(p.numel() for p in net.parameters()) > 0
    assert shipped.head_config.unit == cfg.unit, "the head reads its maps in the unit it was trained in"
    with pytest.raises(SystemExit, match="no lesion_head.json"):
        release.load_part_folder(root / "model_runs/20261129-map-student/map_student", HEAD_FILE, LesionHeadConfig)
