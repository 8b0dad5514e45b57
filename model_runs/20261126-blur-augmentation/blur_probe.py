"""Does a classifier read smoothness as tumor? (rule.md) Tuning half, t = 0, softmax p(tumor).

    python model_runs/20261126-blur-augmentation/blur_probe.py CLASSIFIER_RUN [CLASSIFIER_RUN ...]

For each run: mean p(tumor) of the outlined NIH healthy crops and of the outlined MSD tumor crops,
each blurred inside its support (``smooth_inside``) by σ 0, 0.5, 1.0 and 1.5 canvas pixels; the
rule's figure is the healthy crops' rise at 1.5. Then the bundled sample CT's canvases as they are
(mean over its slices; it has no lesion), with their fine texture beside the crops'.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.crop_samples import smooth_inside
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set
from pancdiff.input_domain import fine_texture_hu
from pancdiff.networks import NoisyClassifier
from pancdiff.train import classifier_probabilities
from pancdiff.weights import ModelBundle, load_bundle, load_weights_into

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"
SIGMAS = (0.0, 0.5, 1.0, 1.5)


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RELEASE = _module("release_models", HERE.parents[1] / "scripts" / "release_models.py")
STUDY = _module("confidence_study", HERE.parent / "20261126-site-free-confidence" / "confidence_study.py")


def main() -> None:
    torch.set_num_threads(1)
    runs = [Path(a) for a in sys.argv[1:]]
    split = json.loads((runs[0] / "split.json").read_text(encoding="utf-8"))
    tune_cases = set(tuning_test_halves(split["val_cases"])[0])
    shipped = load_bundle(None, "cpu")
    data = build_eval_set(DATA, shipped, tune_cases, 0.8, seed=11)
    sample = STUDY.sample_ct_canvases(shipped, False)
    groups = {"healthy": data.healthy & data.has_outline, "tumor": ~data.healthy & data.has_outline}
    window = shipped.preprocess.hu_window
    texture = {name: fine_texture_hu(data.x[sel], data.zone[sel], window) for name, sel in groups.items()}
    print(f"fine texture (HU): NIH healthy {texture['healthy']:.1f}, MSD tumor {texture['tumor']:.1f}, "
          f"sample CT {fine_texture_hu(sample[0], sample[2], window):.1f}")  # fmt: skip
    head = " | ".join(f"σ {s:g}" for s in SIGMAS)
    print(f"| run | crops | {head} | rise at 1.5 | sample CT (no lesion) |")
    print("|---|---|" + "---|" * (len(SIGMAS) + 2))
    for run in runs:
        _, cfg, step = RELEASE.load_run(run)
        clf = NoisyClassifier(cfg.network)
        load_weights_into(clf, run / "classifier.safetensors")
        clf.eval()
        ModelBundle(shipped.unet, clf, cfg.network, cfg.schedule, cfg.preprocess)  # checks the configs fit
        p_sample = float(classifier_probabilities(clf, sample[0], 0, zone=sample[2]).mean())
        for name, sel in groups.items():
            x, v, z = data.x[sel], data.valid[sel], data.zone[sel]
            means = []
            for s in SIGMAS:
                xs = np.stack([smooth_inside(c, m, s) for c, m in zip(x, v)]) if s else x
                means.append(float(classifier_probabilities(clf, xs, 0, zone=z).mean()))
            cells = " | ".join(f"{m:.3f}" for m in means)
            print(f"| {run.name} ({step}) | {name} ({int(sel.sum())}) | {cells} | {means[-1] - means[0]:+.3f} "
                  f"| {p_sample:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
