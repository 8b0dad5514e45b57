"""Where the pancreas is: a mask on the CT's voxel grid, from a file or from TotalSegmentator.

Three sources behind ``pancreas_mask``: a mask file the user gives (any label > 0 is pancreas, so
MSD labels 1 = pancreas and 2 = tumor both count), or TotalSegmentator run on the CT. Label maps on
another grid covering the same physical box are resampled (nearest neighbour); a different box is
refused, because a silently cropped or shifted mask would move every heatmap.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .ctio import CTVolume, read_image
from .errors import DependencyError, InputError

TOTALSEGMENTATOR = "totalsegmentator"

# Relative tolerance (in voxels) for "same grid": origins may differ by float32 rounding only.
_SAME_GRID_VOXELS = 0.01


def pancreas_mask(ct: CTVolume, source: str | Path, *, fast: bool = True, device: str = "auto") -> np.ndarray:
    """The pancreas as a bool mask on the CT grid.

    Args:
        ct: the CT as read by ``read_ct``.
        source: ``"totalsegmentator"`` or the path of a label map (NIfTI, NRRD, MHA).
        fast: TotalSegmentator's 3 mm model (faster, coarser); ignored for a file.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps"; ignored for a file.

    Returns:
        (z, y, x) bool, same shape as ``ct.array``.

    Raises:
        InputError: mask missing, unreadable, off the CT, or empty.
        DependencyError: TotalSegmentator or its weights are missing.
    """
    if str(source) == TOTALSEGMENTATOR:
        return _totalsegmentator_mask(ct, fast=fast, device=device)
    mask = read_labels(ct, source) > 0
    if not mask.any():
        raise InputError(f"{source}: pancreas mask is empty (no voxel > 0 on the CT grid); give a mask with pancreas")
    return mask


def read_labels(ct: CTVolume, path: str | Path) -> np.ndarray:
    """A label map read from ``path`` and brought onto the CT grid.

    Returns:
        (z, y, x) uint8 labels; float maps are rounded, values outside 0..255 clipped.
    """
    return labels_on_ct_grid(ct, read_image(path, what="mask"), Path(path))


def labels_on_ct_grid(ct: CTVolume, labels: sitk.Image, name: str | Path) -> np.ndarray:
    """Check a label image's geometry against the CT and resample it there when only the grid differs."""
    labels = _as_uint8(labels)
    ref = ct.image
    if not _same_grid(labels, ref):
        mask_box, ct_box = _world_box(labels), _world_box(ref)
        if np.any(mask_box[1] <= ct_box[0]) or np.any(ct_box[1] <= mask_box[0]):
            raise InputError(f"{name}: mask does not overlap the CT {ct.path} in space; was it made for another scan?")
        tol = max(max(labels.GetSpacing()), max(ref.GetSpacing()))
        if np.abs(mask_box - ct_box).max() > tol:
            raise InputError(
                f"{name}: mask covers a different physical extent than the CT {ct.path} "
                f"(mask {_fmt_box(mask_box)} mm, CT {_fmt_box(ct_box)} mm); export the mask on the CT's grid"
            )
        labels = sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(labels)


def _as_uint8(image: sitk.Image) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind == "f":
        arr = np.rint(np.nan_to_num(arr, nan=0.0))
    out = sitk.GetImageFromArray(np.clip(arr, 0, 255).astype(np.uint8))
    out.CopyInformation(image)
    return out


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    spacing = np.asarray(b.GetSpacing())
    return (
        np.allclose(a.GetSpacing(), spacing, rtol=1e-4, atol=0)
        and np.abs(np.subtract(a.GetOrigin(), b.GetOrigin())).max() <= _SAME_GRID_VOXELS * spacing.min()
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )


def _world_box(image: sitk.Image) -> np.ndarray:
    """(2, 3) axis-aligned world box (LPS mm) around the voxels' outer edges."""
    size = np.asarray(image.GetSize())
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([(-0.5 if bit == 0 else n - 0.5) for bit, n in zip(c, size)])
        for c in np.ndindex(2, 2, 2)
    ]
    corners = np.asarray(corners)
    return np.stack([corners.min(axis=0), corners.max(axis=0)])


def _fmt_box(box: np.ndarray) -> str:
    return "x".join(f"{hi - lo:.0f}" for lo, hi in box.T) + " at " + ",".join(f"{v:.0f}" for v in box[0])


def _totalsegmentator_mask(ct: CTVolume, *, fast: bool, device: str) -> np.ndarray:
    try:
        from totalsegmentator.python_api import totalsegmentator
    except ImportError:
        raise DependencyError(
            'TotalSegmentator is not installed: pip install "pancdiff[totalsegmentator]", or give a pancreas mask file'
        ) from None
    task = "total_fast" if fast else "total"
    with tempfile.TemporaryDirectory(prefix="pancdiff-totalseg-") as tmp:
        ct_file, seg_file = Path(tmp) / "ct.nii.gz", Path(tmp) / "pancreas.nii.gz"
        sitk.WriteImage(ct.image, str(ct_file), useCompression=True)
        try:
            with _stdout_to_stderr():
                totalsegmentator(
                    ct_file,
                    seg_file,
                    ml=True,
                    fast=fast,
                    roi_subset=["pancreas"],
                    device=_totalseg_device(device),
                    quiet=True,
                )
        except (OSError, SystemExit) as exc:  # requests' ConnectionError is an OSError
            raise DependencyError(
                f"TotalSegmentator could not load or download its weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); on a machine with internet run "
                f"`totalseg_download_weights -t {task}` and copy ~/.totalsegmentator here or set TOTALSEG_HOME_DIR "
                "to that folder; or give a pancreas mask file"
            ) from None
        if not seg_file.is_file():
            raise DependencyError(f"TotalSegmentator wrote no segmentation for {ct.path}; run it alone to see why")
        mask = labels_on_ct_grid(ct, read_image(seg_file, what="mask"), f"TotalSegmentator output for {ct.path}") > 0
    if not mask.any():
        raise InputError(
            f"{ct.path}: TotalSegmentator found no pancreas (roi_subset can return empty for small organs); "
            "try fast=False (--totalseg-full) or give a pancreas mask file"
        )
    return mask


@contextlib.contextmanager
def _stdout_to_stderr():
    """TotalSegmentator and nnU-Net's workers print to stdout; keep it clean for JSON progress lines.

    Redirects the file descriptor too (child processes, C code), where stdout has one.
    """
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # a replaced sys.stdout (tests, GUI) has no descriptor
        fd = saved = None
    try:
        if fd is not None:
            os.dup2(sys.stderr.fileno(), fd)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)


def _totalseg_device(device: str) -> str:
    """Our device names -> TotalSegmentator's ("gpu", "cpu", "mps"; its Python API takes "cuda:N")."""
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return "gpu"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda":
        return "gpu"
    return device


__all__ = ["TOTALSEGMENTATOR", "labels_on_ct_grid", "pancreas_mask", "read_labels"]
