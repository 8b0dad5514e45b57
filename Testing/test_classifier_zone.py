"""Zone-restricted pooling: the classifier looks only at the pancreas zone, wherever it is asked."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.config import PreprocessConfig
from pancdiff.ctio import CTVolume
from pancdiff.evaluate import build_eval_set
from pancdiff.networks import LogSumExpPool, NoisyClassifier, class_evidence
from pancdiff.pipeline import detect_volume
from pancdiff.preprocess import extract_slices, pancreas_zones, to_canvases
from pancdiff.weights import init_bundle
from test_preprocess import _lps_anatomy

LSE = dataclasses.replace(TINY_NETWORK, classifier_pooling="lse")
ZONED = dataclasses.replace(LSE, classifier_zone=True)


def test_masked_pool_is_the_smooth_max_over_the_zone_only():
    pool = LogSumExpPool(r=4.0)
    h = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    where = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    where[0, 0, 1:3, 1:3] = True  # 4 positions; sample 1 has none: it pools over all 16
    got = pool(h, where)
    inside = h[0, :, 1:3, 1:3].reshape(2, -1)
    assert torch.allclose(got[0], (torch.logsumexp(4 * inside, 1) - math.log(4)) / 4)
    assert torch.allclose(got[1], pool(h)[1])
    assert torch.allclose(pool(torch.full((1, 2, 4, 4), 0.7), where[:1]), torch.full((1, 2), 0.7))


def test_the_class_activation_map_is_what_the_pool_pooled_on_the_canvas():
    """``logits_and_positions`` gives forward's logits with the per-position logits and the pooled
    positions; ``class_evidence`` puts tumor minus healthy on the canvas, seen only where the pool looked."""
    torch.manual_seed(0)
    net = NoisyClassifier(ZONED).eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(2, dtype=torch.long)
    zone = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    zone[0, :, 2:14, 3:15] = True  # 8 px cells: rows 0-1, columns 0-1 of the 8 x 8 grid
    with torch.no_grad():
        logits, positions, where = net.logits_and_positions(x, t, zone)
        assert torch.equal(logits, net(x, t, zone)) and torch.equal(logits, LogSumExpPool()(positions, where))
        e, seen = class_evidence(positions, where, 64)
    assert e.shape == seen.shape == (2, 64, 64)
    assert seen[0, :16, :16].all() and seen[0].sum() == 16 * 16, "the two pooled cells, whole"
    assert seen[1].all(), "a sample without zone pixels was pooled over every position"
    grid = positions[0, 1] - positions[0, 0]  # tumor minus healthy: the peak stays in its cell on the canvas
    row, col = divmod(int(grid.argmax()), 8)
    peak_row, peak_col = divmod(int(e[0].argmax()), 64)
    assert (peak_row // 8, peak_col // 8) == (row, col) and e[0].max() <= grid.max() + 1e-6
    e_all, seen_all = class_evidence(positions, None, 64)
    assert torch.equal(e_all, e) and seen_all.all()
    mean_head = NoisyClassifier(TINY_NETWORK).eval()  # a mean head has no positions to show
    assert mean_head.logits_and_positions(x, t)[1:] == (None, None)


def test_a_zoned_classifier_pools_only_zone_positions_and_an_old_one_ignores_the_zone():
    """The smooth max runs over the positions whose receptive field centre lies in the zone. (Features
    still carry GroupNorm's whole-canvas statistics: outside pixels move them slightly, never by
    being the maximum.)"""
    torch.manual_seed(0)
    zoned = NoisyClassifier(ZONED).eval()
    plain = NoisyClassifier(LSE).eval()
    plain.load_state_dict(zoned.state_dict())  # the same weights: the zone is pooling, not parameters
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(1, dtype=torch.long)
    zone = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    zone[..., 2:14, 3:15] = True  # on the 8 x 8 feature grid (8 px cells): rows 0-1, columns 0-1
    seen = []
    zoned.out.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        got = zoned(x, t, zone)
        h = seen[-1]
        assert h.shape[-2:] == (8, 8)
        assert torch.allclose(got, LogSumExpPool()(h[..., 0:2, 0:2]))
        assert torch.allclose(zoned(x, t), LogSumExpPool()(h)), "without a zone: every position"
        assert torch.equal(plain(x, t, zone), plain(x, t)), "a classifier trained without zones ignores them"
        assert torch.equal(zoned(x, t), plain(x, t))
    with pytest.raises(ValueError, match="lse"):
        NoisyClassifier(dataclasses.replace(TINY_NETWORK, classifier_zone=True))


def test_inference_zones_are_the_pancreas_plus_margin_inside_the_support():
    image, hu, mask = _lps_anatomy()
    cfg = PreprocessConfig(margin_mm=4.0, image_size=64)
    batch = extract_slices(CTVolume(image, hu, Path("x")), mask, cfg)
    zone = pancreas_zones(mask, batch, cfg)
    organ = to_canvases(mask.astype(np.float32), batch) > 0.5
    assert zone.shape == batch.valid.shape and zone.dtype == bool
    assert not (zone & ~batch.valid).any() and zone[organ].all()
    assert zone.sum() < batch.valid.sum(), "the box support holds more than the organ and its margin"
    assert zone.sum() > organ.sum(), "the margin lets a tumor at the organ's border count"


def test_simulated_lesions_go_only_into_crops_with_a_pancreas_outline(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", cases_per_class=2, slices_per_case=3, with_labels=True)
    rows = list(csv.DictReader((folder / "manifest.csv").open()))
    unlabelled = {r["file"] for r in rows if r["case"] == "healthy_000"}
    for r in rows:
        if r["file"] in unlabelled:
            r["labels"] = ""
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = build_eval_set(folder, init_bundle(seed=0, network=TINY_NETWORK))
    sim = data.lesions["simulated"]
    assert len(sim) == 3, "only the labelled healthy case (3 crops) receives lesions"
    assert all(not np.array_equal(z, v) for z, v in zip(sim.zone, sim.valid)), "each has an organ zone"
    assert all(z[m].mean() > 0.9 for z, m in zip(sim.zone, sim.mask)), "and its lesion lies in it"


def test_detection_on_a_ct_hands_the_classifier_each_canvas_pancreas_zone():
    image, hu, mask = _lps_anatomy()
    bundle = init_bundle(seed=0, network=TINY_NETWORK)
    bundle.preprocess = PreprocessConfig(margin_mm=4.0, image_size=64)
    calls = []
    classify = bundle.classifier.forward
    bundle.classifier.forward = lambda x, t, zone=None: calls.append(zone) or classify(x, t, zone)
    ct = CTVolume(image, hu, Path("x"))
    detect_volume(ct, mask, bundle, {"scale": 2.0, "noise_level": 20, "steps": 2, "device": "cpu"})
    expected = pancreas_zones(mask, extract_slices(ct, mask, bundle.preprocess), bundle.preprocess)
    assert len(calls) == 1 + 2  # confidence, then one gradient per step (one batch)
    for zone in calls:
        assert zone is not None and np.array_equal(zone[:, 0].numpy(), expected)


def test_msd_evaluation_scores_and_places_lesions_in_the_pancreas_zone(tmp_path):
    """MSD canvases carry their organ (labels 1-2): the zone is organ + margin, not the whole box."""
    from pancdiff.phantom import PhantomConfig, write_phantom_dataset

    root = write_phantom_dataset(
        tmp_path / "Task07", cases=2, seed=3, tumor_fraction=0.5, cfg=PhantomConfig(shape=(14, 80, 80))
    )
    data = build_eval_set(root, init_bundle(seed=0, network=TINY_NETWORK), cases=None)
    assert not (data.zone & ~data.valid).any() and data.zone.sum() < data.valid.sum()
    sim = data.lesions["simulated"]
    assert all(z[m].mean() > 0.9 for z, m in zip(sim.zone, sim.mask)), "lesions lie in the zone"
