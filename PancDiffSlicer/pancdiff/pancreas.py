"""Where the pancreas is: a mask on the CT's voxel grid, from a file or from TotalSegmentator.

Three sources behind ``pancreas_mask``: a mask file the user gives (any label > 0 is pancreas, so
MSD labels 1 = pancreas and 2 = tumor both count), or TotalSegmentator run on the CT. Label maps on
another grid covering the same physical box are resampled (nearest neighbour); a different box is
refused, because a silently cropped or shifted mask would move every heatmap.

What a mask must look like (``check_labels``, ``check_pancreas``), so that a CT given as its own
mask, a multi-organ map or a mask made for another scan stops at once instead of starting a long run:

- labels: values in 0..255, at most ``MAX_LABEL_VALUES`` distinct values; a float map must hold
  whole numbers, or fractions in [0, 1] (a probability or interpolated mask, rounded at 0.5);
- a plausible pancreas: ``PANCREAS_VOLUME_ML`` (a whole adult pancreas is about 50-120 ml; the lower
  limit leaves room for a scan that covers part of it, the upper one for a large tumor);
- soft tissue inside: the CT's median HU under the mask within ``PANCREAS_MEDIAN_HU`` (a fatty
  pancreas included; air, fat alone or bone are not).
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

MAX_LABEL_VALUES = 16
"""More distinct values than this is not a pancreas label map (e.g. a multi-organ segmentation)."""
PANCREAS_VOLUME_ML = (1.0, 500.0)
"""Accepted volume of the pancreas mask, in ml."""
PANCREAS_MEDIAN_HU = (-80.0, 250.0)
"""Accepted median CT value under the pancreas mask, in HU."""


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
    check_pancreas(ct, mask, source)
    return mask


def check_pancreas(ct: CTVolume, mask: np.ndarray, name: str | Path) -> None:
    """Refuse a mask whose volume or CT contents cannot be a pancreas (limits in the module docstring).

    Args:
        ct: the CT.
        mask: (z, y, x) bool on the CT grid, not empty.
        name: the mask's origin, for the message.

    Raises:
        InputError: one line naming the mask, the measured value and the accepted range.
    """
    voxel_ml = float(np.prod(ct.image.GetSpacing())) / 1000.0
    volume = float(np.count_nonzero(mask)) * voxel_ml
    lo, hi = PANCREAS_VOLUME_ML
    if not lo <= volume <= hi:
        hint = (
            "a label map of the whole body or a CT given as mask?"
            if volume > hi
            else "a few stray voxels, or a mask made for another scan?"
        )
        raise InputError(
            f"{name}: pancreas mask holds {volume:.4g} ml, outside the plausible {lo:g}-{hi:g} ml ({hint}); "
            "give the pancreas mask of this CT"
        )
    median = float(np.median(ct.array[mask]))
    lo, hi = PANCREAS_MEDIAN_HU
    if not lo <= median <= hi:
        raise InputError(
            f"{name}: the CT {ct.path} under this pancreas mask has median {median:.0f} HU, outside soft tissue's "
            f"{lo:g}..{hi:g} HU (air, fat or bone, not pancreas); is the mask on the right CT, in the right place?"
        )


def read_labels(ct: CTVolume, path: str | Path) -> np.ndarray:
    """A label map read from ``path`` and brought onto the CT grid.

    Returns:
        (z, y, x) uint8 labels; float maps are rounded, values outside 0..255 clipped.
    """
    return labels_on_ct_grid(ct, read_image(path, what="mask"), Path(path))


def labels_on_ct_grid(ct: CTVolume, labels: sitk.Image, name: str | Path) -> np.ndarray:
    """Check a label image's values and geometry against the CT; resample it there when only the grid differs."""
    labels = check_labels(labels, name)
    ref = ct.image
    if not _same_grid(labels, ref):
        mask_box, ct_box = _world_box(labels), _world_box(ref)
        hint = ""
        if labels.GetSize() == ref.GetSize():
            hint = (
                f"; it has the CT's size {'x'.join(map(str, ref.GetSize()))} but another "
                f"{_grid_difference(labels, ref)}: was it saved without the CT's geometry (e.g. from a numpy array)? "
                "Copy the CT's origin, spacing and direction onto it"
            )
        if np.any(mask_box[1] <= ct_box[0]) or np.any(ct_box[1] <= mask_box[0]):
            raise InputError(
                f"{name}: mask does not overlap the CT {ct.path} in space" + (hint or "; was it made for another scan?")
            )
        tol = max(max(labels.GetSpacing()), max(ref.GetSpacing()))
        if np.abs(mask_box - ct_box).max() > tol:
            raise InputError(
                f"{name}: mask covers a different physical extent than the CT {ct.path} "
                f"(mask {_fmt_box(mask_box)} mm, CT {_fmt_box(ct_box)} mm)"
                + (hint or "; export the mask on the CT's grid")
            )
        labels = sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(labels)


def check_labels(image: sitk.Image, name: str | Path) -> sitk.Image:
    """A label image as uint8, or a one-line refusal when its values cannot be labels.

    Refused: negative or non-finite values, values above 255 (an image in HU, not labels), non-integer
    values above 1, more than ``MAX_LABEL_VALUES`` distinct values. Fractions in [0, 1] are rounded.
    """
    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name}: mask holds NaN or infinite values; a label map holds whole numbers 0, 1, 2, ...")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255:
        raise InputError(
            f"{name}: mask values range {lo:g}..{hi:g}, like a CT in HU, not labels (0 background, 1 pancreas, "
            "2 tumor); give the pancreas label map, not the image"
        )
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if hi > 1.0 and not np.allclose(arr, rounded, atol=1e-3, rtol=0):
            raise InputError(
                f"{name}: mask holds non-integer values up to {hi:g}, an image rather than labels; "
                "give a label map (0 background, 1 pancreas)"
            )
        arr = rounded
    arr = np.asarray(arr).astype(np.uint8)
    n_values = int(np.count_nonzero(np.bincount(arr.ravel(), minlength=256)))
    if n_values > MAX_LABEL_VALUES:
        raise InputError(
            f"{name}: mask holds {n_values} different values; a pancreas mask has a few labels (0 background, "
            "1 pancreas, 2 tumor); for a multi-organ segmentation export the pancreas label alone"
        )
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out


def _grid_difference(a: sitk.Image, b: sitk.Image) -> str:
    """Which of origin, spacing, direction differ, with values, for a same-size mismatch."""
    parts = []
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3):
        parts.append(f"origin ({_fmt_vec(a.GetOrigin())} vs the CT's {_fmt_vec(b.GetOrigin())})")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4):
        parts.append(f"spacing ({_fmt_vec(a.GetSpacing())} vs {_fmt_vec(b.GetSpacing())})")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4):
        parts.append("direction")
    return ", ".join(parts) or "geometry"


def _fmt_vec(values) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


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
            "TotalSegmentator is not installed: in a PancDiff checkout run 'bash scripts/setup.sh "
            "--with-totalsegmentator' (in Slicer: install the TotalSegmentator extension), or give a pancreas mask file"
        ) from None
    _usage_statistics_off_unless_chosen()
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
    check_pancreas(ct, mask, f"TotalSegmentator output for {ct.path}")
    return mask


def _usage_statistics_off_unless_chosen() -> None:
    """TotalSegmentator reports every run to its authors unless its config says otherwise, and writes
    that config (send_usage_stats: true) on first use. Where no config exists yet, write one with
    statistics off, unless PANCDIFF_TOTALSEG_USAGE_STATS=1; an existing config is the user's choice.
    """
    try:
        from totalsegmentator.config import get_totalseg_dir, set_config_key, setup_totalseg
    except ImportError:  # an API without these functions: leave its behaviour alone
        return
    if (Path(get_totalseg_dir()) / "config.json").exists():
        return
    setup_totalseg()
    set_config_key("send_usage_stats", os.environ.get("PANCDIFF_TOTALSEG_USAGE_STATS") == "1")


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
    """Our device names -> TotalSegmentator's ("gpu" or "cpu"; its Python API takes "cuda:N").

    Never "mps": TotalSegmentator's 3D convolutions fail there, so Auto and MPS fall back to the CPU
    for this step (the diffusion models still use MPS).
    """
    if device == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "gpu"
    if device == "mps":
        return "cpu"
    return device


__all__ = [
    "MAX_LABEL_VALUES",
    "PANCREAS_MEDIAN_HU",
    "PANCREAS_VOLUME_ML",
    "TOTALSEGMENTATOR",
    "check_labels",
    "check_pancreas",
    "labels_on_ct_grid",
    "pancreas_mask",
    "read_labels",
]
