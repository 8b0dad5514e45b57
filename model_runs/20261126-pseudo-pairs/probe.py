"""Same-site counterfactuals from the model's own map: a 1,000-step probe against a control (rule.md).

    python model_runs/20261126-pseudo-pairs/probe.py   # repository root; → stdout, probe.json

Training uses no tumor outline: the pseudo region is the shipped detector's candidates inside the
pancreas zone of each training MSD crop, filled from a shifted copy of the same crop's own pancreas.
The tuning-half measurements use outlines (for measurement only), as the site probe does.
"""

import copy
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pancdiff.crop_samples import NO_AUGMENT
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.diffusion import alpha_bar_schedule, q_sample
from pancdiff.evaluate import auroc, build_eval_set
from pancdiff.train import (
    _Batches,
    classifier_probabilities,
    load_slice_data,
    paired_auroc,
    real_slots,
    sample_timesteps,
)
from pancdiff.weights import load_bundle
from scipy import ndimage
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data" / "pancreas-tc"
STEPS, LR, SEED = 1000, 1e-4, 0


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RELEASE = _module("release_models", ROOT / "scripts" / "release_models.py")
SITE = _module("site_probe", HERE.parent / "20261126-real-slices" / "site_probe.py")
sys.path.insert(0, str(HERE.parent / "20261128-saliency-baseline"))
from saliency import HEADER, score_candidates  # noqa: E402


def self_fill(x: np.ndarray, region: np.ndarray, zone: np.ndarray, rng) -> np.ndarray | None:
    """``x`` with ``region`` (dilated 1 px) replaced by the same canvas shifted so that the copied
    pixels come from its own zone outside the region (feathered 1 px); None when no shift finds
    >= 90 % such tissue."""
    hole = ndimage.binary_dilation(region, iterations=1)
    source_ok = zone & ~ndimage.binary_dilation(region, iterations=3)
    pts = np.argwhere(hole)
    best, best_frac = None, 0.0
    for dy, dx in rng.integers(-24, 25, size=(96, 2)):
        src = pts + (dy, dx)
        inside = (src >= 0).all(1) & (src < x.shape[0]).all(1)
        frac = float(np.mean(inside & source_ok[np.clip(src[:, 0], 0, 63), np.clip(src[:, 1], 0, 63)]))
        if frac > best_frac:
            best, best_frac = (int(dy), int(dx)), frac
    if best is None or best_frac < 0.9:
        return None
    shifted = np.roll(x, (-best[0], -best[1]), axis=(0, 1))  # shifted[p] = x[p + d]
    w = np.clip(ndimage.gaussian_filter(hole.astype(np.float32), 1.0) * 2.0, 0.0, 1.0)
    w = np.maximum(w, hole)
    return (w * shifted + (1 - w) * x).astype(np.float32)


def pseudo_pairs(bundle, train, region=lambda res: res.candidates) -> dict:
    """Pairs (crop, crop with its pseudo region filled) from the training MSD crops with an outline;
    ``region(detection result)`` gives the (B, S, S) map regions, kept inside the zone."""
    rng = np.random.default_rng(SEED)
    outlined = [o is not None and o.any() for o in train.organs]
    ix = [i for i in range(len(train)) if train.labels[i] == 1 and outlined[i]]
    canvases = [train.canvas(i, rng, NO_AUGMENT) for i in ix]
    x = np.stack([c.x for c in canvases])
    valid = np.stack([c.valid for c in canvases])
    zone = np.stack([train.zone(c) for c in canvases])
    res = Detector(bundle, bundle.operating_point).detect(x, valid, zone=zone)
    pos, neg, zs, area = [], [], [], []
    for xi, marked, z in zip(x, region(res), zone):
        inside = marked & z
        filled = self_fill(xi, inside, z, rng) if inside.any() else None
        if filled is None:
            continue
        pos.append(xi)
        neg.append(filled)
        zs.append(z)
        area.append(inside.sum() / z.sum())
    print(f"pseudo pairs: {len(pos)} of {len(ix)} training MSD crops with an outline "
          f"(region {np.mean(area):.2f} of the zone on average)")  # fmt: skip
    return {"pos": np.stack(pos), "neg": np.stack(neg), "zone": np.stack(zs), "n_crops": len(ix)}


def fine_tune(bundle, cfg, train, run_cfg, pairs: dict | None = None, per_batch: int = 0) -> torch.nn.Module:
    """H fine-tuned STEPS steps on ``run_cfg``'s batches (simulated pairs, then its real slices) with
    ``per_batch`` pseudo pairs from ``pairs`` put between the two (none: H's recipe, the control)."""
    torch.manual_seed(SEED)
    model = copy.deepcopy(bundle.classifier).train()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=cfg.weight_decay)
    alpha_bar = alpha_bar_schedule(cfg.schedule).float()
    n_real = real_slots(run_cfg)
    batches = _Batches(train, run_cfg, "classifier", np.random.default_rng(SEED))
    rng = np.random.default_rng(SEED + 1)
    end = cfg.iterations  # H's final t distribution
    for _ in range(STEPS):
        x, y, zone = batches.next(end)
        if pairs is not None:
            k = rng.integers(len(pairs["pos"]), size=per_batch)
            px = torch.from_numpy(np.stack([v for i in k for v in (pairs["neg"][i], pairs["pos"][i])]))[:, None]
            pz = torch.from_numpy(np.stack([pairs["zone"][i] for i in k for _ in range(2)]))[:, None]
            cut = len(x) - n_real  # pairs first, real slices last (the t and noise sharing below)
            x = torch.cat([x[:cut], px, x[cut:]])
            y = torch.cat([y[:cut], torch.tensor([0, 1] * per_batch), y[cut:]])
            zone = torch.cat([zone[:cut], pz, zone[cut:]])
        n_pairs = (len(x) - n_real) // 2
        t = sample_timesteps(end, n_pairs, cfg).repeat_interleave(2)
        t = torch.cat([t, sample_timesteps(end, n_real, cfg)])
        noise = torch.randn_like(x[: 2 * n_pairs : 2]).repeat_interleave(2, dim=0)
        noise = torch.cat([noise, torch.randn_like(x[2 * n_pairs :])])
        loss = F.cross_entropy(model(q_sample(x, t, noise, alpha_bar), t, zone).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.update_parameters(model)
    return ema.module.eval()


def measure(bundle, clf, data) -> dict:
    real = data.lesions["real"]
    painted = [SITE.paint_over(x, m, z, i) for i, (x, m, z) in enumerate(zip(real.x, real.mask, real.zone))]
    keep = [i for i, p in enumerate(painted) if p is not None]
    healthy = data.healthy & data.has_outline

    def p(x, zone):
        return classifier_probabilities(clf, np.ascontiguousarray(x), 0, zone=np.ascontiguousarray(zone))

    p_h, p_t = p(data.x[healthy], data.zone[healthy]), p(real.x[keep], real.zone[keep])
    p_p = p(np.stack([painted[i] for i in keep]), real.zone[keep])
    sim = data.lesions["simulated"]
    return {
        "real_vs_painted": auroc(np.r_[np.zeros(len(keep)), np.ones(len(keep))], np.r_[p_p, p_t]),
        "site_painted_vs_nih": auroc(np.r_[np.zeros(len(p_h)), np.ones(len(keep))], np.r_[p_h, p_p]),
        "paired_sim_t0": paired_auroc(clf, sim.clean, sim.x, 0, zone=sim.zone),
    }


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.monotonic()
    bundle = load_bundle(None, "cpu")
    _, cfg, _, _ = RELEASE.classifier_from_bundle(bundle.card)
    train = load_slice_data(DATA, cfg).train
    pairs = pseudo_pairs(bundle, train)
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    classifiers = {"H (shipped)": bundle.classifier}
    classifiers["control"] = fine_tune(bundle, cfg, train, cfg)
    pseudo_cfg = dataclasses.replace(cfg, real_fraction=0.0, batch_size=16)  # 8 simulated pairs, no real slices
    classifiers["pseudo"] = fine_tune(bundle, cfg, train, pseudo_cfg, pairs, per_batch=8)
    print(f"fine-tunes done at {time.monotonic() - t0:.0f} s")
    record, maps = {}, {}
    from pancdiff.evaluate import setting_maps
    from pancdiff.progress import QUIET

    for name, clf in classifiers.items():
        record[name] = measure(bundle, clf, data)
        maps[name] = setting_maps(dataclasses.replace(bundle, classifier=clf), bundle.operating_point, data, QUIET)
    print("| classifier | real tumor vs painted copy | painted MSD vs NIH (site) | paired simulated t=0 |")
    print("|---|---|---|---|")
    for name, r in record.items():
        print(f"| {name} | {r['real_vs_painted']:.3f} | {r['site_painted_vs_nih']:.3f} | {r['paired_sim_t0']:.3f} |")
    print()
    print(HEADER)
    scored = score_candidates(maps, data, bundle.operating_point)
    for name in record:
        record[name]["objective"] = max(r["dice"] for r in scored[name] if r["fp_fraction"] <= 0.02)
    c, s = record["control"], record["pseudo"]
    verdict = (
        s["real_vs_painted"] >= c["real_vs_painted"] + 0.05
        and s["site_painted_vs_nih"] <= c["site_painted_vs_nih"]
        and s["objective"] >= c["objective"] + 0.01
    )
    record["verdict_full_run"] = bool(verdict)
    record["pseudo_pairs"] = {"pairs": len(pairs["pos"]), "crops": pairs["n_crops"]}
    print(f"\nverdict: {'a full run is earned' if verdict else 'no full run'}; "
          f"{time.monotonic() - t0:.0f} s")  # fmt: skip
    (HERE / "probe.json").write_text(json.dumps({**record, "rows": scored}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
