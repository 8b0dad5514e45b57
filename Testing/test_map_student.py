"""The map student: it stands in for the decode only at its own setting, and its maths is what it says."""

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
from pancdiff.map_student import StudentConfig, build_student, student_fits, student_map
from pancdiff.progress import QUIET
from pancdiff.weights import STUDENT_FILE, init_bundle, load_bundle, save_bundle

CFG = DetectConfig(scale=2.0, noise_level=8, steps=4, map_kind="guidance", saliency_weight=0.5, min_anomaly=0.0,
                   device="cpu", normalization="calibrated", map_scale=0.05, threshold=0.5)  # fmt: skip


def _student(cfg: DetectConfig = CFG, **changes) -> StudentConfig:
    return StudentConfig(steps=2, replaces_steps=cfg.steps, scale=cfg.scale, noise_level=cfg.noise_level,
                         guidance=cfg.guidance, map_kind=cfg.map_kind, saliency_weight=cfg.saliency_weight,
                         unit=cfg.map_scale, channels=(4, 8), **changes)  # fmt: skip


def _bundle_with_student(seed: int = 0):
    bundle = init_bundle(seed=seed, network=TINY_NETWORK)
    torch.manual_seed(seed)
    bundle.student_config = _student()
    bundle.student = build_student(bundle.student_config).eval()
    return bundle


def test_student_fits_only_the_setting_it_was_distilled_at():
    student = _student()
    on = dataclasses.replace(CFG, map_student=True)
    assert student_fits(student, on)
    assert not student_fits(student, CFG), "map_student False: the K-step decode"
    assert not student_fits(None, on), "a bundle without a student"
    for change in ({"scale": 3.0}, {"steps": 8, "noise_level": 8}, {"noise_level": 16}, {"guidance": "x0"},
                   {"map_kind": "input"}, {"saliency_weight": 0.25}):  # fmt: skip
        assert not student_fits(student, dataclasses.replace(on, **change)), change
    assert not student_fits(student, on.paper_exact()), "the paper-exact run never takes the student"


def test_student_config_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="student inputs"):
        StudentConfig(inputs=("x", "texture"), saliency_weight=1.0)
    with pytest.raises(ValueError, match="saliency weight"):
        StudentConfig(saliency_weight=0.0)
    with pytest.raises(ValueError, match="unit"):
        StudentConfig(saliency_weight=1.0, unit=0.0)


def test_a_zero_student_passes_its_coarse_map_through():
    """The residual student adds its output to the coarse map (clipped at 0); without the map it is softplus."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.random((3, 16, 16), dtype=np.float32), "valid": np.ones((3, 16, 16), bool),
              "saliency": rng.random((3, 16, 16), dtype=np.float32), "zone": np.ones((3, 16, 16), bool),
              "map": rng.normal(0.0, 0.1, (3, 16, 16)).astype(np.float32)}  # fmt: skip
    arrays["valid"][:, :2] = False
    for inputs in (("x", "saliency", "zone", "map"), ("x", "saliency", "zone")):
        cfg = _student(inputs=inputs)
        net = build_student(cfg)
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        out = student_map(net, cfg, arrays)
        want = np.maximum(arrays["map"], 0.0) if "map" in inputs else np.full_like(out, np.log(2.0) * cfg.unit)
        np.testing.assert_allclose(out, want * arrays["valid"], rtol=1e-6, atol=1e-7)


def test_detector_decodes_at_the_student_steps_and_corrects_the_map():
    bundle = _bundle_with_student()
    rng = np.random.default_rng(1)
    x = rng.random((2, 16, 16), dtype=np.float32)
    valid = np.ones_like(x, bool)
    valid[:, :, :3] = False
    zone = valid.copy()
    zone[:, :4] = False
    on = dataclasses.replace(CFG, map_student=True)
    det = Detector(bundle, on)
    result = det.detect(x, valid, zone=zone)
    assert det.cfg.steps == 2 and det.encoding_identity()["steps"] == 2, "the encoding is the student's K"
    assert result.evaluations_per_slice == evaluations_per_slice(dataclasses.replace(CFG, steps=2)) + 1
    coarse = Detector(bundle, dataclasses.replace(CFG, steps=2)).map_grid(x, valid, [2.0], with_probability=True,
                                                                           zone=zone)  # fmt: skip
    arrays = {"x": x, "valid": valid, "zone": zone, "saliency": coarse["saliency"],
              "map": coarse["anomaly"][("noisy", "guidance", 2.0)]}  # fmt: skip
    want = np.maximum(student_map(bundle.student, bundle.student_config, arrays),
                      np.where(valid, CFG.saliency_weight * coarse["saliency"], 0.0))  # fmt: skip
    np.testing.assert_allclose(result.anomaly, want, rtol=1e-5, atol=1e-7)
    elsewhere = dataclasses.replace(on, scale=3.0)  # the slider moved: the K-step decode, as without a student
    np.testing.assert_array_equal(
        Detector(bundle, elsewhere).detect(x, valid, zone=zone).anomaly,
        Detector(init_bundle(seed=0, network=TINY_NETWORK), elsewhere).detect(x, valid, zone=zone).anomaly,
    )
    assert Detector(bundle, CFG).detect(x, valid, zone=zone).evaluations_per_slice == evaluations_per_slice(CFG)


def test_a_bundle_keeps_its_student_and_refuses_a_swapped_one(tmp_path):
    bundle = _bundle_with_student()
    out = save_bundle(bundle, tmp_path / "with", {"model_id": "t"})
    loaded = load_bundle(out)
    assert loaded.student_config == bundle.student_config and STUDENT_FILE in loaded.sha256
    for a, b in zip(loaded.student.state_dict().values(), bundle.student.state_dict().values()):
        assert torch.equal(a, b)
    plain = load_bundle(save_bundle(init_bundle(seed=0, network=TINY_NETWORK), tmp_path / "without", {}))
    assert plain.student is None and "map_student" not in plain.card, "no student: the K-step decode"
    other = _bundle_with_student(seed=1)
    from pancdiff.weights import save_state

    save_state(other.student, out / STUDENT_FILE)
    with pytest.raises(WeightsError, match="does not match model.json"):
        load_bundle(out)
    (out / STUDENT_FILE).unlink()
    with pytest.raises(WeightsError, match="weight file missing"):
        load_bundle(out)
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    card["map_student"]["inputs"] = ["x", "texture"]
    (out / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(WeightsError, match="map_student section is not a valid student"):
        load_bundle(out)


def test_release_takes_the_map_student_by_its_rule(tmp_path):
    spec = importlib.util.spec_from_file_location("release_models", Path(__file__).parents[1] / "scripts" /
                                                  "release_models.py")  # fmt: skip
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    folder = write_slice_folder(tmp_path / "tc", cases_per_class=1, slices_per_case=2, with_labels=True)
    with_student = _bundle_with_student()
    student = (with_student.student_config, with_student.student)
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    data = build_eval_set(folder, bundle)
    cfg = dataclasses.replace(CFG, smooth_sigma_px=1.0)
    raw = setting_maps(bundle, cfg, data, QUIET)
    taken, maps, rows, record = release.choose_student(bundle, cfg, data, raw, student, -1.0, 1.0, 0.02, QUIET)
    assert record["taken"] and taken.map_student and bundle.student is student[1]
    assert record["rows"]["student"]["passes"] < record["rows"]["decode"]["passes"] == evaluations_per_slice(cfg)
    assert {r["smooth_sigma_px"] for r in rows} == {1.0} and maps is not raw
    assert "- Map student: taken." in release.student_lines(record)[0]
    bundle.student = bundle.student_config = None
    same, maps, rows, record = release.choose_student(bundle, cfg, data, raw, student, 1.01, 1.0, 0.02, QUIET)
    assert not record["taken"] and not same.map_student and maps is raw and bundle.student is None
    elsewhere = (dataclasses.replace(student[0], scale=7.0), student[1])
    same, maps, _, record = release.choose_student(bundle, cfg, data, raw, elsewhere, -1.0, 1.0, 0.02, QUIET)
    assert not record["taken"] and record["why_not"] == "distilled at another setting" and maps is raw
    assert "not taken (distilled at another setting)" in release.student_lines(record)[0]
    assert release.student_lines(None) == [] and release.student_flag(None) == ""


def test_the_command_line_can_refuse_the_student():
    from pancdiff.cli import build_parser
    from pancdiff.commands.detect import overrides_from
    from pancdiff.pipeline import resolve_config

    parser = build_parser("detect")
    on = dataclasses.replace(CFG, map_student=True)
    given = overrides_from(parser.parse_args(["detect", "ct.nii.gz", "--out", "o"]))
    assert resolve_config(on, **given).map_student, "by default the model's own choice"
    refused = overrides_from(parser.parse_args(["detect", "ct.nii.gz", "--out", "o", "--no-map-student"]))
    assert not resolve_config(on, **refused).map_student


def test_a_ct_outside_the_input_domain_gets_the_k_step_decode():
    """The student learned from in-domain crops only; the pipeline does not let it stand in elsewhere."""
    from cli_support import synthetic_volume
    from pancdiff.pipeline import detect_volume

    torch.set_num_threads(1)
    ct, pancreas = synthetic_volume()
    bundle = init_bundle(seed=0)
    op = dataclasses.replace(CFG, noise_level=20, map_student=True)
    bundle.operating_point, bundle.student_config = op, _student(op)
    bundle.student = build_student(bundle.student_config).eval()
    inside = detect_volume(ct, pancreas, bundle)
    assert inside.map_student and inside.evaluations_per_slice == evaluations_per_slice(
        dataclasses.replace(op, steps=2)) + 1, "no range in the card: nothing says the CT is outside"  # fmt: skip
    far = inside.fine_texture_hu * 3
    bundle.card = {"input_domain": {"fine_texture_hu": [far, far * 2]}}
    outside = detect_volume(ct, pancreas, bundle)
    assert not outside.map_student and not outside.cfg.map_student
    assert outside.evaluations_per_slice == evaluations_per_slice(op)
    bundle.card = {"input_domain": {"fine_texture_hu": [0.0, far]}}
    assert detect_volume(ct, pancreas, bundle).map_student


def test_a_map_grid_is_always_the_k_step_decode():
    """A student fits one S: an evaluation grid over S (which ``raw_map_grid`` decodes from one latent)
    never takes it, even when its base setting is the student's own."""
    from pancdiff.evaluate import raw_map_grid

    rng = np.random.default_rng(2)
    x = rng.random((2, 16, 16), dtype=np.float32)
    valid = np.ones_like(x, bool)
    on = dataclasses.replace(CFG, map_student=True)
    with_student = raw_map_grid(_bundle_with_student(), on, x, valid, (0.0, 2.0), zone=valid)
    without = raw_map_grid(init_bundle(seed=0, network=TINY_NETWORK), CFG, x, valid, (0.0, 2.0), zone=valid)
    assert with_student.keys() == without.keys()
    for key in without:
        np.testing.assert_array_equal(with_student[key], without[key])
