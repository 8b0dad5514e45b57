"""Described, not chosen on: paired AUROC of Z2 and run B at t = 0 and t = 50 on dark and on bright
simulated lesions (3 draws, seeds 100-102, in every labelled healthy tuning crop; as
../20261126-noisy-classifier/by_lesion_t.py, with the lesion's sign fixed per column).

python model_runs/20261126-bright-lesions/by_lesion_sign.py WEIGHTS... (repository root)
"""

import json
import sys

import numpy as np
import torch
from pancdiff.crop_samples import NO_AUGMENT, CropSampler
from pancdiff.datasets.slice_folder import load_label_map, load_slice_image, read_manifest, tuning_test_halves
from pancdiff.diffusion import alpha_bar_schedule
from pancdiff.lesions import LesionConfig, insert_lesion
from pancdiff.metrics import auroc
from pancdiff.train import classifier_probabilities
from pancdiff.weights import load_bundle

sys.path.insert(0, "model_runs/20261126-noisy-classifier")
from by_lesion_t import load_classifier  # noqa: E402


def pairs(bright: float):
    b = load_bundle(None, "cpu")
    split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
    tune, _ = tuning_test_halves(split["val_cases"])
    recs = [r for r in read_manifest("../shared/data/pancreas-tc") if r.case in set(tune) and r.tumor == 0 and r.labels]
    organs = [load_label_map(r.labels) > 0 for r in recs]
    s = CropSampler([load_slice_image(r.path) for r in recs], [0] * len(recs), b.preprocess, 0.8, organs)
    canv = [s.canvas(i, np.random.default_rng(i), NO_AUGMENT) for i in range(len(recs))]
    cfg = LesionConfig(bright_fraction=bright)
    clean, les, zone = [], [], []
    for rep in range(3):
        rng = np.random.default_rng(100 + rep)
        for cv in canv:
            ins = insert_lesion(cv.x, cv.valid, rng, 1.0, cfg, b.preprocess.hu_window, cv.organ)
            if ins is not None:
                clean.append(cv.x)
                les.append(ins[0])
                zone.append(s.zone(cv))
    return b, np.stack(clean), np.stack(les), np.stack(zone)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, bright in (("dark", 0.0), ("bright", 1.0)):
        b, clean, les, zone = pairs(bright)
        y = np.r_[np.zeros(len(clean)), np.ones(len(les))]
        alpha_bar = alpha_bar_schedule(b.schedule)
        for w in sys.argv[1:]:
            clf = load_classifier(b, w)
            for t in (0, 50):
                p0 = classifier_probabilities(clf, clean, t, alpha_bar=alpha_bar, zone=zone)
                p1 = classifier_probabilities(clf, les, t, alpha_bar=alpha_bar, zone=zone)
                print(f"{name:6s} {w} t={t} pairs {len(clean)} AUROC {auroc(y, np.r_[p0, p1]):.4f}", flush=True)
