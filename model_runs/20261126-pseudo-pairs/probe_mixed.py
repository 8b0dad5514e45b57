"""The pseudo pairs beside H's real slices, with larger pseudo regions (rule.md, addendum).

    python model_runs/20261126-pseudo-pairs/probe_mixed.py   # repository root; → stdout, probe_mixed.json

The control is the first probe's (``probe.json``); this run trains and measures the mixed variant only, with
``probe.pseudo_pairs`` (regions where the normalized map is >= REGION_THRESHOLD) and ``probe.fine_tune``.
"""

import dataclasses
import json
import time

import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set, setting_maps
from pancdiff.progress import QUIET
from pancdiff.train import load_slice_data, real_slots
from pancdiff.weights import load_bundle
from probe import DATA, HEADER, HERE, RELEASE, fine_tune, measure, pseudo_pairs, score_candidates

REGION_THRESHOLD = 0.35


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.monotonic()
    bundle = load_bundle(None, "cpu")
    _, cfg, _, _ = RELEASE.classifier_from_bundle(bundle.card)
    train = load_slice_data(DATA, cfg).train
    pairs = pseudo_pairs(bundle, train, lambda res: res.normalized >= REGION_THRESHOLD)
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    mixed_cfg = dataclasses.replace(cfg, batch_size=24, real_fraction=1 / 3)  # 8 simulated pairs, 8 real slices
    assert real_slots(mixed_cfg) == 8
    clf = fine_tune(bundle, cfg, train, mixed_cfg, pairs, per_batch=4)
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
