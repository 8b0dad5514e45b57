"""What limits the paired AUROC at t = N: an upper bound and the AUROC by lesion strength.

Same draws as by_lesion_t.py. The bound is an observer that knows the clean crop and where the
lesion is (a matched filter on the noise alone): its statistic is N(0, 1) without the lesion and
N(snr, 1) with it, snr = sqrt(a_t) ||d|| / sqrt(1 - a_t) for the lesion's difference image d, so
its pooled AUROC is mean(Phi(snr / sqrt 2)). No classifier can do better; ours also has to find
the lesion in unknown anatomy. python model_runs/20261126-noisy-classifier/t_limit.py WEIGHTS...
"""

import sys

import numpy as np
import torch
from by_lesion_t import lesion_pairs, load_classifier
from pancdiff.diffusion import alpha_bar_schedule
from pancdiff.metrics import auroc
from pancdiff.train import classifier_probabilities
from scipy.signal import correlate
from scipy.stats import norm

torch.set_num_threads(1)
b, clean, les, zone = lesion_pairs()
alpha_bar = alpha_bar_schedule(b.schedule)
d = np.sqrt(((les - clean) ** 2).reshape(len(les), -1).sum(1))  # ||d|| in [0, 1] window units
for t in (0, 50, 100, 200):
    a = float(alpha_bar[t])
    snr = np.sqrt(a) * d / np.sqrt(1 - a)
    print(f"t={t}: bound {norm.cdf(snr / np.sqrt(2)).mean():.3f}, median snr {np.median(snr):.2f}", flush=True)
a = float(alpha_bar[100])
snr = np.sqrt(a) * d / np.sqrt(1 - a)
edges = np.quantile(snr, [0, 0.25, 0.5, 0.75, 1.0])
for w in sys.argv[1:]:
    clf = load_classifier(b, w)
    p0 = classifier_probabilities(clf, clean, 100, alpha_bar=alpha_bar, zone=zone)
    p1 = classifier_probabilities(clf, les, 100, alpha_bar=alpha_bar, zone=zone)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (snr >= lo) & (snr <= hi)
        bound = norm.cdf(snr[m] / np.sqrt(2)).mean()
        got = auroc(np.r_[np.zeros(m.sum()), np.ones(m.sum())], np.r_[p0[m], p1[m]])
        print(f"{w} t=100 snr {lo:.1f}-{hi:.1f} (n={m.sum()}): AUROC {got:.3f}, bound {bound:.3f}", flush=True)

# A tighter bound that still knows the background: the lesion's own template scanned over the
# pancreas zone (where it is does not come with the image), max response as the statistic, 4
# noise draws per pair at t = 100.
rng = np.random.default_rng(0)
scan0, scan1 = [], []
for i in range(len(les)):
    diff = (les[i] - clean[i]) * np.sqrt(a) / np.sqrt(1 - a)  # the lesion in noise-std units
    rows, cols = np.nonzero(np.abs(diff) > 1e-6)
    tpl = diff[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    tpl = tpl / np.linalg.norm(tpl)
    for _ in range(4):
        noise = rng.standard_normal(diff.shape)
        for image, out in ((noise, scan0), (noise + diff, scan1)):
            response = correlate(image, tpl, mode="same")
            out.append(response[zone[i]].max())
scan_auroc = auroc(np.r_[np.zeros(len(scan0)), np.ones(len(scan1))], np.r_[scan0, scan1])
print(f"t=100 scan bound (known background, unknown place in the zone): {scan_auroc:.3f}")
