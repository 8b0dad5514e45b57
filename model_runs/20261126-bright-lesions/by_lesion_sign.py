"""Described, not chosen on: paired AUROC of Z2 and run B at t = 0 and t = 50 on dark and on bright
simulated lesions (3 draws, seeds 100-102, in every labelled healthy tuning crop; as
../20261126-noisy-classifier/by_lesion_t.py, with the lesion's sign fixed per column).

python model_runs/20261126-bright-lesions/by_lesion_sign.py WEIGHTS... (repository root)
"""

import sys

import torch
from pancdiff.diffusion import alpha_bar_schedule
from pancdiff.lesions import LesionConfig
from pancdiff.train import paired_auroc

sys.path.insert(0, "model_runs/20261126-noisy-classifier")
from by_lesion_t import lesion_pairs, load_classifier  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, bright in (("dark", 0.0), ("bright", 1.0)):
        b, clean, les, zone = lesion_pairs(LesionConfig(bright_fraction=bright))
        alpha_bar = alpha_bar_schedule(b.schedule)
        for w in sys.argv[1:]:
            clf = load_classifier(b, w)
            for t in (0, 50):
                value = paired_auroc(clf, clean, les, t, alpha_bar, zone)
                print(f"{name:6s} {w} t={t} pairs {len(clean)} AUROC {value:.4f}", flush=True)
