"""How much of a classifier's real-tumor score is the site (MSD against NIH), not the tumor?
Tuning half, t = 0, crops with a pancreas outline only. Reported, not used to choose anything.

    python model_runs/20261126-real-slices/site_probe.py CLASSIFIER_RUN [CLASSIFIER_RUN ...]

For every MSD crop with a tumor outline, a copy with the tumor (dilated 2 px) painted over by the
crop's own non-tumor pancreas zone: its median plus noise of its spread, seeded per crop. Then:
- ``slice``: AUROC of p(tumor), real tumor crops against outlined NIH healthy crops (site and tumor);
- ``painted``: the same with the tumor painted over. Near ``slice``: the score is the site; near 0.5:
  the tumor. The painting is crude: a flat patch may itself look odd, so read it against a classifier
  never shown a real tumor;
- ``paired``: each tumor crop against its own painted copy (1.0: removing the tumor always lowers
  p(tumor); the real-tumor counterpart of the gate's paired inserted-lesion AUROC).
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set
from pancdiff.metrics import auroc
from pancdiff.networks import NoisyClassifier
from pancdiff.train import classifier_probabilities
from pancdiff.weights import ModelBundle, load_bundle, load_weights_into
from scipy import ndimage

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("release_models", HERE.parents[1] / "scripts" / "release_models.py")
RELEASE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RELEASE)  # its load_run reads a training run folder as the release does
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"


def paint_over(x: np.ndarray, mask: np.ndarray, zone: np.ndarray, seed: int) -> np.ndarray:
    """``x`` with ``mask`` (dilated 2 px) replaced by the median and spread of the rest of ``zone``."""
    hole = ndimage.binary_dilation(mask, iterations=2)
    rest = x[zone & ~hole]
    if rest.size < 20:
        return None
    out = x.copy()
    rng = np.random.default_rng(seed)
    out[hole] = np.clip(np.median(rest) + rest.std() * rng.standard_normal(int(hole.sum())), 0, 1)
    return out


def probe(run: Path, tune_cases: set[str], unet) -> dict:
    _, cfg, step = RELEASE.load_run(run)
    clf = NoisyClassifier(cfg.network)
    load_weights_into(clf, run / "classifier.safetensors")
    bundle = ModelBundle(unet, clf.eval(), cfg.network, cfg.schedule, cfg.preprocess)
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    real = data.lesions["real"]
    painted = [paint_over(x, m, z, i) for i, (x, m, z) in enumerate(zip(real.x, real.mask, real.zone))]
    keep = [i for i, p in enumerate(painted) if p is not None]
    healthy = data.healthy & data.has_outline

    def p(x, zone):
        return classifier_probabilities(clf, np.ascontiguousarray(x), 0, zone=np.ascontiguousarray(zone))

    p_h = p(data.x[healthy], data.zone[healthy])
    p_t = p(real.x[keep], real.zone[keep])
    p_p = p(np.stack([painted[i] for i in keep]), real.zone[keep])
    y = np.r_[np.zeros(len(p_h)), np.ones(len(keep))]
    return {
        "run": str(run),
        "step": step,
        "n_tumor": len(keep),
        "n_healthy": int(healthy.sum()),
        "slice": auroc(y, np.r_[p_h, p_t]),
        "painted": auroc(y, np.r_[p_h, p_p]),
        "paired": auroc(np.r_[np.zeros(len(keep)), np.ones(len(keep))], np.r_[p_p, p_t]),
        "mean_p_tumor": [float(p_h.mean()), float(p_t.mean()), float(p_p.mean())],
    }


def main() -> None:
    torch.set_num_threads(1)
    runs = [Path(a) for a in sys.argv[1:]]
    split = json.loads((runs[0] / "split.json").read_text(encoding="utf-8"))
    tune_cases = set(tuning_test_halves(split["val_cases"])[0])
    unet = load_bundle(None, "cpu").unet  # only to fill the bundle; no map is made here
    print("| run | step | tumor / healthy crops | slice AUROC | painted AUROC | paired (tumor vs painted) "
          "| mean p(tumor): healthy, tumor, painted |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        r = probe(run, tune_cases, unet)
        m = ", ".join(f"{v:.3f}" for v in r["mean_p_tumor"])
        print(f"| {run.name} | {r['step']} | {r['n_tumor']} / {r['n_healthy']} | {r['slice']:.3f} "
              f"| {r['painted']:.3f} | {r['paired']:.3f} | {m} |")  # fmt: skip


if __name__ == "__main__":
    main()
