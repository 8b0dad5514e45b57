"""How often does the input-domain check warn on CTs like the training ones, and on others?

    python model_runs/20261126-input-domain/check_cases.py [MODEL_DIR]

Per patient of each validation half: the median fine texture of its outlined canvases (as
``pancdiff.input_domain.fine_texture_hu`` takes it per CT), against the bundle card's range, which the
release measured on the tuning half's canvases. The test half is the honest false-warning rate on
the two training sites. Then the bundled sample CT, as ``pancdiff detect`` measures it.
"""

import sys
from pathlib import Path

import numpy as np
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.demo import SAMPLE_CT, SAMPLE_MASK, sample_data_dir
from pancdiff.evaluate import build_eval_set
from pancdiff.input_domain import check, fine_texture_hu
from pancdiff.pipeline import detect_volume
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"


def main() -> None:
    bundle = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None, "cpu")
    domain = bundle.card["input_domain"]
    low, high = domain["fine_texture_hu"]
    print(f"bundle {bundle.model_id}: range {low:.1f}-{high:.1f} HU (median {domain['median_hu']:.1f})")
    print("| half | site | patients | outside the range | their textures (HU) |")
    print("|---|---|---|---|---|")
    halves = dict(zip(("tuning", "test"), tuning_test_halves(bundle.card["split"]["val_cases"])))
    for (name, cases), seed in zip(halves.items(), (11, 22)):
        data = build_eval_set(DATA, bundle, set(cases), 0.8, seed=seed)
        for site, label in (("NIH healthy", 0), ("MSD tumor", 1)):
            values = []
            for case in sorted(set(data.cases)):
                keep = (np.array(data.cases) == case) & data.has_outline & (data.y == label)
                if keep.any():
                    values.append(fine_texture_hu(data.x[keep], data.zone[keep], bundle.preprocess.hu_window))
            values = [v for v in values if v is not None]
            outside = [v for v in values if not low <= v <= high]
            shown = ", ".join(f"{v:.1f}" for v in outside) or "-"
            print(f"| {name} | {site} | {len(values)} | {len(outside)} | {shown} |")
    from pancdiff.ctio import read_ct
    from pancdiff.pancreas import pancreas_mask

    root = sample_data_dir()
    ct = read_ct(root / SAMPLE_CT)
    det = detect_volume(ct, pancreas_mask(ct, root / SAMPLE_MASK), bundle, {"device": "cpu"})
    record = check(det.fine_texture_hu, domain)
    print(f"\nsample CT: fine texture {record['fine_texture_hu']} HU, inside: {record['inside']}")


if __name__ == "__main__":
    main()
