"""The pseudo pairs beside H's real slices, with larger pseudo regions (rule.md, addendum).

    python model_runs/20261126-pseudo-pairs/probe_mixed.py   # repository root; → stdout, probe_mixed.json

The control is the first probe's (``probe.json``); this run trains and measures the mixed variant only.
"""

import copy
import dataclasses
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from pancdiff.crop_samples import NO_AUGMENT
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.diffusion import alpha_bar_schedule, q_sample
from pancdiff.evaluate import build_eval_set, setting_maps
from pancdiff.progress import QUIET
from pancdiff.train import _Batches, load_slice_data, real_slots, sample_timesteps
from pancdiff.weights import load_bundle
from probe import DATA, HEADER, HERE, LR, RELEASE, SEED, STEPS, measure, score_candidates, self_fill
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

REGION_THRESHOLD = 0.35


def pseudo_pairs(bundle, train) -> dict:
    """As ``probe.pseudo_pairs``, with regions where the normalized map is >= REGION_THRESHOLD."""
    rng = np.random.default_rng(SEED)
    outlined = [o is not None and o.any() for o in train.organs]
    ix = [i for i in range(len(train)) if train.labels[i] == 1 and outlined[i]]
    canvases = [train.canvas(i, rng, NO_AUGMENT) for i in ix]
    x = np.stack([c.x for c in canvases])
    valid = np.stack([c.valid for c in canvases])
    zone = np.stack([train.zone(c) for c in canvases])
    res = Detector(bundle, bundle.operating_point).detect(x, valid, zone=zone)
    pos, neg, zs, area = [], [], [], []
    for xi, m, z in zip(x, res.normalized, zone):
        region = (m >= REGION_THRESHOLD) & z
        filled = self_fill(xi, region, z, rng) if region.any() else None
        if filled is None:
            continue
        pos.append(xi)
        neg.append(filled)
        zs.append(z)
        area.append(region.sum() / z.sum())
    print(f"pseudo pairs: {len(pos)} of {len(ix)} training MSD crops with an outline "
          f"(region {np.mean(area):.2f} of the zone on average)")  # fmt: skip
    return {"pos": np.stack(pos), "neg": np.stack(neg), "zone": np.stack(zs), "n_crops": len(ix)}


def fine_tune_mixed(bundle, cfg, train, pairs: dict) -> torch.nn.Module:
    """H fine-tuned STEPS steps on 8 simulated pairs, 4 pseudo pairs and 8 real slices per batch."""
    torch.manual_seed(SEED)
    model = copy.deepcopy(bundle.classifier).train()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=cfg.weight_decay)
    alpha_bar = alpha_bar_schedule(cfg.schedule).float()
    run_cfg = dataclasses.replace(cfg, batch_size=24, real_fraction=1 / 3)
    n_real = real_slots(run_cfg)
    assert n_real == 8, n_real
    batches = _Batches(train, run_cfg, "classifier", np.random.default_rng(SEED))
    rng = np.random.default_rng(SEED + 1)
    end = cfg.iterations
    for _ in range(STEPS):
        x, y, zone = batches.next(end)
        k = rng.integers(len(pairs["pos"]), size=4)
        px = torch.from_numpy(np.stack([v for i in k for v in (pairs["neg"][i], pairs["pos"][i])]))[:, None]
        pz = torch.from_numpy(np.stack([pairs["zone"][i] for i in k for _ in range(2)]))[:, None]
        cut = len(x) - n_real  # pairs first, real slices last (the t and noise sharing below)
        x = torch.cat([x[:cut], px, x[cut:]])
        y = torch.cat([y[:cut], torch.tensor([0, 1] * 4), y[cut:]])
        zone = torch.cat([zone[:cut], pz, zone[cut:]])
        n_pairs = (len(x) - n_real) // 2
        t = torch.cat([sample_timesteps(end, n_pairs, cfg).repeat_interleave(2), sample_timesteps(end, n_real, cfg)])
        noise = torch.randn_like(x[: 2 * n_pairs : 2]).repeat_interleave(2, dim=0)
        noise = torch.cat([noise, torch.randn_like(x[2 * n_pairs :])])
        loss = F.cross_entropy(model(q_sample(x, t, noise, alpha_bar), t, zone).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.update_parameters(model)
    return ema.module.eval()


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.monotonic()
    bundle = load_bundle(None, "cpu")
    _, cfg, _, _ = RELEASE.classifier_from_bundle(bundle.card)
    train = load_slice_data(DATA, cfg).train
    pairs = pseudo_pairs(bundle, train)
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    clf = fine_tune_mixed(bundle, cfg, train, pairs)
    print(f"fine-tune done at {time.monotonic() - t0:.0f} s", flush=True)
    r = measure(bundle, clf, data)
    maps = {"mixed": setting_maps(dataclasses.replace(bundle, classifier=clf), bundle.operating_point, data, QUIET)}
    control = json.loads((HERE / "probe.json").read_text(encoding="utf-8"))["control"]
    print("| classifier | real tumor vs painted copy | painted MSD vs NIH (site) | paired simulated t=0 |")
    print("|---|---|---|---|")
    for name, row in (("control (probe.json)", control), ("mixed", r)):
        print(f"| {name} | {row['real_vs_painted']:.3f} | {row['site_painted_vs_nih']:.3f} "
              f"| {row['paired_sim_t0']:.3f} |")  # fmt: skip
    print()
    print(HEADER)
    scored = score_candidates(maps, data, bundle.operating_point)
    r["objective"] = max(row["dice"] for row in scored["mixed"] if row["fp_fraction"] <= 0.02)
    verdict = (
        r["real_vs_painted"] >= control["real_vs_painted"] + 0.05
        and r["site_painted_vs_nih"] <= control["site_painted_vs_nih"]
        and r["objective"] >= control["objective"] + 0.01
    )
    print(f"\nobjective {r['objective']:.3f} against the control's {control['objective']:.3f}; verdict: "
          f"{'a full run is earned' if verdict else 'no full run'}; {time.monotonic() - t0:.0f} s")  # fmt: skip
    record = {"mixed": r, "control": control, "verdict_full_run": bool(verdict), "rows": scored}
    record["pseudo_pairs"] = {"pairs": len(pairs["pos"]), "crops": pairs["n_crops"], "threshold": REGION_THRESHOLD}
    (HERE / "probe_mixed.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
