"""Reading CT volumes (NIfTI, NRRD, MHA, a DICOM series folder) and writing results on their grid.

Arrays are always in SimpleITK's index order reversed, ``(z, y, x)`` = ``array[k, j, i]`` for the
voxel at ITK index ``(i, j, k)``; the original ``sitk.Image`` is kept untouched beside the array, so
every output can be written back with the CT's exact origin, spacing and direction
(``write_like``). Anatomical reorientation happens later, inside ``preprocess``, as array views.

HU check (``check_hu``): a CT in Hounsfield units contains air (about -1000 HU) somewhere, outside
the body, in the lungs or in bowel gas. We ask for at least ``min(100, 0.1 %)`` of the voxels at or
below -500 HU, so a few noisy voxels do not pass an 8-bit image, an MR in [0, 4000] or a CT stored
without its rescale intercept (air at 0), while a tight abdominal crop with a gas bubble still does.
"""

from __future__ import annotations

import gzip
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

AIR_HU = -500.0
"""Voxels at or below this count as air for the HU check."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT as read from disk.

    Attributes:
        image: the original SimpleITK image (geometry and pixel type untouched).
        array: (z, y, x) float32 HU, the same voxels as ``image``.
        path: the file or DICOM folder it came from.
    """

    image: sitk.Image
    array: np.ndarray
    path: Path

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm in array order (z, y, x)."""
        return tuple(float(s) for s in reversed(self.image.GetSpacing()))


def read_ct(path: str | Path, series_uid: str | None = None) -> CTVolume:
    """Read a CT and check that it is a 3D scalar volume in HU without NaN.

    Args:
        path: a NIfTI / NRRD / MHA file, or a folder holding one DICOM series.
        series_uid: which series to read when the folder holds several.

    Raises:
        InputError: a one-line message naming the file and the problem.
    """
    path = Path(path)
    image = read_image(path, series_uid=series_uid, what="CT")
    array = sitk.GetArrayViewFromImage(image).astype(np.float32)  # one copy, in float32
    check_hu(array, path)
    return CTVolume(image=image, array=array, path=path)


def read_image(path: str | Path, series_uid: str | None = None, what: str = "image") -> sitk.Image:
    """A 3D scalar image from a file or a DICOM series folder; no check of the intensities.

    Shared by CTs and masks so both refuse the same broken files with the same words.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; check the path")
    if path.is_dir():
        image = _read_dicom_folder(path, series_uid)
    else:
        if series_uid is not None:
            raise InputError(f"{path}: series_uid applies to DICOM folders only; give the folder, not a file")
        if path.name.endswith(_NIFTI_SUFFIXES):
            _check_nifti_complete(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise InputError(
                f"{path}: unreadable or truncated {what} file; expected NIfTI, NRRD, MHA or a DICOM folder"
            ) from None
    return _as_3d_scalar(image, path, what)


def check_hu(array: np.ndarray, path: Path) -> None:
    """Refuse data that cannot be a CT in HU (see the module docstring for the rule)."""
    if not np.isfinite(array).all():
        n_bad = int(array.size - np.isfinite(array).sum())
        raise InputError(f"{path}: {n_bad} NaN or infinite voxel(s); a CT must have a finite HU value everywhere")
    n_air = int(np.count_nonzero(array <= AIR_HU))
    needed = min(100, max(1, int(0.001 * array.size)))
    if n_air < needed:
        lo, hi = float(array.min()), float(array.max())
        raise InputError(
            f"{path}: not a CT in Hounsfield units (values {lo:g}..{hi:g}, no air at <= {AIR_HU:g} HU); "
            "give a CT in HU (for DICOM, rescale slope/intercept applied), not an MR, photo or 8-bit export"
        )


def write_like(array_zyx: np.ndarray, reference: sitk.Image, path: str | Path, dtype: np.dtype = np.float32) -> Path:
    """Write a (z, y, x) array with the reference's exact origin, spacing and direction.

    Written to a temporary name then renamed, so a failed write never leaves half a file.
    """
    path = Path(path)
    expected = tuple(reversed(reference.GetSize()))
    if tuple(array_zyx.shape) != expected:
        raise ValueError(f"array shape {array_zyx.shape} does not match the reference grid {expected} (z, y, x)")
    dtype = np.dtype(np.uint8 if np.dtype(dtype) == np.bool_ else dtype)
    image = sitk.GetImageFromArray(np.asarray(array_zyx).astype(dtype, copy=False))
    image.CopyInformation(reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=path.name.endswith(".gz") or path.suffix in (".nrrd", ".mha"))
        os.replace(tmp, path)
    except RuntimeError:
        raise InputError(
            f"{path}: cannot write here (unknown extension or no permission); use .nii.gz, .nrrd or .mha"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read_dicom_folder(folder: Path, series_uid: str | None) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        raise InputError(
            f"{folder}: no DICOM series in this folder; give a folder of DICOM slices or a NIfTI/NRRD file"
        )
    if series_uid is None:
        if len(series) > 1:
            raise InputError(
                f"{folder}: holds {len(series)} DICOM series ({', '.join(series)}); "
                "say which one with series_uid (--series-uid)"
            )
        series_uid = series[0]
    elif series_uid not in series:
        raise InputError(f"{folder}: no DICOM series {series_uid!r}; the folder holds {', '.join(series)}")
    files = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError:
        raise InputError(f"{folder}: DICOM series {series_uid} is unreadable or has truncated slices") from None


def _as_3d_scalar(image: sitk.Image, path: Path, what: str) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: {what} has {image.GetNumberOfComponentsPerPixel()} channels per voxel (RGB or vector); "
            "expected one grey value per voxel"
        )
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:  # a 4D header around one volume
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size=size, index=[0, 0, 0, 0])
        dim = 3
    if dim != 3:
        raise InputError(f"{path}: {what} is {dim}D (size {image.GetSize()}); expected one 3D volume")
    if min(image.GetSize()) < 2:
        raise InputError(f"{path}: {what} is a single slice (size {image.GetSize()}); expected a 3D volume")
    return image


def _check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI silently with zeros at the end; compare the size with the header."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(540)
    except (OSError, EOFError):
        raise InputError(f"{path}: unreadable or truncated NIfTI file (damaged gzip stream)") from None
    expected = _nifti_expected_bytes(header)
    if expected is None:
        return  # not a NIfTI header we understand; let ITK judge
    if path.name.endswith(".gz"):
        with path.open("rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        if isize == expected % 2**32:
            return
        actual = _gzip_length(path)  # multi-member or damaged: count for real
    else:
        actual = path.stat().st_size
    if actual is None:
        raise InputError(f"{path}: truncated NIfTI file (the gzip stream ends early); copy or export it again")
    if actual < expected:
        raise InputError(f"{path}: truncated NIfTI file ({actual} of {expected} bytes); copy or export it again")


def _nifti_expected_bytes(header: bytes) -> int | None:
    for endian in "<>":
        if len(header) >= 348 and np.frombuffer(header[:4], f"{endian}i4")[0] == 348:
            dims = np.frombuffer(header[40:56], f"{endian}i2").astype(np.int64)
            bitpix = int(np.frombuffer(header[72:74], f"{endian}i2")[0])
            offset = int(np.frombuffer(header[108:112], f"{endian}f4")[0])
            break
        if len(header) >= 540 and np.frombuffer(header[:4], f"{endian}i4")[0] == 540:
            dims = np.frombuffer(header[16:80], f"{endian}i8")
            bitpix = int(np.frombuffer(header[14:16], f"{endian}i2")[0])
            offset = int(np.frombuffer(header[168:176], f"{endian}i8")[0])
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    return max(offset, 348) + int(np.prod(np.maximum(dims[1 : ndim + 1], 1))) * bitpix // 8


def _gzip_length(path: Path) -> int | None:
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError):
        return None
    return total


__all__ = ["AIR_HU", "CTVolume", "check_hu", "read_ct", "read_image", "write_like"]
