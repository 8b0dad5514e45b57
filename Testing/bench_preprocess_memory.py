"""Peak memory of the CT -> canvases -> 3D map path on a full-size CT (512 x 512 x 400).

    python Testing/bench_preprocess_memory.py [--keep DIR]

Writes a synthetic int16 CT (0.78 x 0.78 x 1 mm, a pancreas-sized mask over 120 slices) to disk,
then, in a fresh child process so the figure is not inflated by making the data, runs ``read_ct``,
``pancreas_mask`` (file), ``extract_slices``, ``paste_back`` and ``write_like`` and prints the
child's peak resident set size. The target is < 3 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = (400, 512, 512)  # z, y, x
SPACING = (0.78, 0.78, 1.0)  # x, y, z (SimpleITK order)


def make_data(folder: Path) -> tuple[Path, Path]:
    import numpy as np
    import SimpleITK as sitk

    nz, ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    body = ((xx - nx / 2) / 220) ** 2 + ((yy - ny / 2) / 170) ** 2 <= 1
    rng = np.random.default_rng(0)
    ct = np.full(SHAPE, -1000, dtype=np.int16)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    # An elongated oblique blob, ~150 mm long, like a pancreas, over slices 140..259.
    pancreas2d = ((xx - nx / 2) / 95) ** 2 + ((yy - ny / 2 + 0.3 * (xx - nx / 2)) / 18) ** 2 <= 1
    for z in range(nz):
        ct[z][body] = 40 + rng.integers(-20, 20, size=int(body.sum()), dtype=np.int16)
        if 140 <= z < 260:
            mask[z][pancreas2d] = 1
    for array, name in ((ct, "ct.nii"), (mask, "pancreas.nii")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        image.SetOrigin((-200.0, -180.0, -600.0))
        sitk.WriteImage(image, str(folder / name))
    return folder / "ct.nii", folder / "pancreas.nii"


def measure(ct_path: Path, mask_path: Path, out: Path) -> dict:
    import numpy as np
    from pancdiff.config import PreprocessConfig
    from pancdiff.ctio import read_ct, write_like
    from pancdiff.pancreas import pancreas_mask
    from pancdiff.preprocess import extract_slices, paste_back

    t0 = time.perf_counter()
    ct = read_ct(ct_path)
    mask = pancreas_mask(ct, mask_path)
    batch = extract_slices(ct, mask, PreprocessConfig())
    maps = np.random.default_rng(0).random(batch.canvases.shape, dtype=np.float32)
    volume = paste_back(maps, batch)
    write_like(volume, ct.image, out / "heatmap.nii.gz")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "canvases": len(batch),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(peak_kib / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", nargs=2, metavar=("CT", "MASK"), help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--keep", metavar="DIR", help="keep the synthetic data here")
    args = parser.parse_args()
    if args.measure:
        ct_path, mask_path = map(Path, args.measure)
        print(json.dumps(measure(ct_path, mask_path, ct_path.parent)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ct_path, mask_path = make_data(folder)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(ct_path), str(mask_path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"512x512x400 CT: {result['canvases']} canvases, {result['seconds']} s, "
            f"peak RSS {result['peak_rss_mb']} MB (target < 3000 MB)"
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
