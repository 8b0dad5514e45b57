"""Selection measurement (selection_rule.md): paired AUROC at t = 0 and t = 100 on 3 lesion draws
(seeds 100-102) in the tuning half's labelled healthy crops, zone pooling, identical noise per pair.
Not the gate set (build_eval_set seed 11)."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.crop_samples import NO_AUGMENT, CropSampler
from pancdiff.datasets.slice_folder import load_label_map, load_slice_image, read_manifest, tuning_test_halves
from pancdiff.diffusion import alpha_bar_schedule
from pancdiff.lesions import LesionConfig, insert_lesion
from pancdiff.networks import NoisyClassifier
from pancdiff.train import paired_auroc
from pancdiff.weights import load_bundle, load_weights_into


def lesion_pairs(lesion_cfg: LesionConfig = LesionConfig()):
    """(bundle, clean, lesioned, zone): 3 lesion draws in every labelled healthy tuning crop."""
    b = load_bundle(None, "cpu")
    split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
    tune, _ = tuning_test_halves(split["val_cases"])
    recs = [r for r in read_manifest("../shared/data/pancreas-tc") if r.case in set(tune) and r.tumor == 0 and r.labels]
    s = CropSampler(
        [load_slice_image(r.path) for r in recs],
        [0] * len(recs),
        b.preprocess,
        0.8,
        [load_label_map(r.labels) > 0 for r in recs],
    )
    canv = [s.canvas(i, np.random.default_rng(i), NO_AUGMENT) for i in range(len(recs))]
    clean, les, zone = [], [], []
    for rep in range(3):
        rng = np.random.default_rng(100 + rep)
        for cv in canv:
            ins = insert_lesion(cv.x, cv.valid, rng, 1.0, lesion_cfg, b.preprocess.hu_window, cv.organ)
            if ins is not None:
                clean.append(cv.x)
                les.append(ins[0])
                zone.append(s.zone(cv))
    return b, np.stack(clean), np.stack(les), np.stack(zone)


def load_classifier(b, weights):
    clf = NoisyClassifier(dataclasses.replace(b.network, classifier_pooling="lse", classifier_zone=True))
    load_weights_into(clf, Path(weights))
    return clf.eval()


if __name__ == "__main__":
    torch.set_num_threads(1)
    b, clean, les, zone = lesion_pairs()
    alpha_bar = alpha_bar_schedule(b.schedule)
    for w in sys.argv[1:]:
        clf = load_classifier(b, w)
        for t in (0, 100):
            print(w, f"t={t}", len(clean), round(paired_auroc(clf, clean, les, t, alpha_bar, zone), 4), flush=True)
