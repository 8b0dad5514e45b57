"""Find the pancreas in a CT with TotalSegmentator and write it as a mask on the CT's grid.

The Slicer module runs this once per CT and shows the mask as an editable segment; later detections
reuse that (possibly corrected) segment with 'pancdiff detect --pancreas-mask' instead of running
TotalSegmentator again. Needs the totalsegmentator package and its weights.

example:
  pancdiff pancreas ct.nii.gz --out pancreas.nii.gz
"""

from __future__ import annotations

import argparse

from ..progress import Reporter

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", metavar="CT", help="CT file (NIfTI, NRRD, MHA) or DICOM folder")
    parser.add_argument("--out", required=True, metavar="MASK", help="mask file to write (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--series-uid", metavar="UID", help="which series of a DICOM folder holding several")
    parser.add_argument(
        "--totalseg-full", action="store_true", help="TotalSegmentator's full 1.5 mm model (default: fast 3 mm)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where TotalSegmentator runs (never Apple MPS: its convolutions fail there; auto = CUDA if present)",
    )  # fmt: skip


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    import numpy as np

    from ..ctio import read_ct, write_like
    from ..errors import InputError
    from ..pancreas import TOTALSEGMENTATOR, pancreas_mask

    if not args.out.endswith(MASK_SUFFIXES):
        raise InputError(f"{args.out}: the mask must be a .nii.gz, .nii, .nrrd or .mha file")
    reporter.stage("read", str(args.ct))
    ct = read_ct(args.ct, series_uid=args.series_uid)
    reporter.stage("pancreas", "TotalSegmentator")
    mask = pancreas_mask(ct, TOTALSEGMENTATOR, fast=not args.totalseg_full, device=_device(args.device))
    reporter.stage("write", args.out)
    write_like(mask.astype(np.uint8), ct.image, args.out, dtype=np.uint8)
    voxels = int(mask.sum())
    args.result = {"out": str(args.out), "pancreas_voxels": voxels}
    reporter.info(f"pancreas: {voxels} voxels -> {args.out}")
    return 0


def _device(choice: str) -> str:
    """Our choice for TotalSegmentator: CUDA when asked for or present, else the CPU (never MPS)."""
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
