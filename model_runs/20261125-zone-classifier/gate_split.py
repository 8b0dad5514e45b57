"""Gate paired AUROC (tuning half, seed 11) split by whether the healthy crop has an organ label.

python model_runs/20261125-zone-classifier/gate_split.py [--zone] WEIGHTS... (from the repository root;
run at 4efe88b + the network change, before lesions were restricted to labelled crops)."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.datasets.slice_folder import read_manifest, tuning_test_halves
from pancdiff.evaluate import build_eval_set
from pancdiff.metrics import auroc
from pancdiff.networks import NoisyClassifier
from pancdiff.train import classifier_probabilities
from pancdiff.weights import load_bundle, load_weights_into

torch.set_num_threads(1)
zone = "--zone" in sys.argv
weights = [a for a in sys.argv[1:] if a != "--zone"]
b = load_bundle(None, "cpu")
b.network = dataclasses.replace(b.network, classifier_pooling="lse", classifier_zone=zone)
b.classifier = NoisyClassifier(b.network).eval()
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
tune, _ = tuning_test_halves(split["val_cases"])
data = build_eval_set("../shared/data/pancreas-tc", b, set(tune), 0.8, seed=11)
recs = [r for r in read_manifest("../shared/data/pancreas-tc") if r.case in set(tune)]
sim = data.lesions["simulated"]
# which healthy records were kept: zone == valid means no organ
labelled = np.array([not np.array_equal(z, v) for z, v in zip(sim.zone, sim.valid)])
print("n", len(labelled), "labelled", labelled.sum())
for w in weights:
    load_weights_into(b.classifier, Path(w))
    p0 = classifier_probabilities(b.classifier, sim.clean, 0, zone=sim.zone)
    p1 = classifier_probabilities(b.classifier, sim.x, 0, zone=sim.zone)
    y = np.r_[np.zeros(len(p0)), np.ones(len(p1))]
    for name, m in [("all", np.ones_like(labelled)), ("labelled", labelled), ("unlabelled", ~labelled)]:
        if m.sum() == 0:
            continue
        print(
            w.split("/")[-1],
            name,
            int(m.sum()),
            round(auroc(np.r_[np.zeros(m.sum()), np.ones(m.sum())], np.r_[p0[m], p1[m]]), 3),
        )
