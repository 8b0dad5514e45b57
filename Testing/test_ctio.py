"""Reading CTs: formats, geometry, and every bad input refused with one line naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pancdiff.ctio import CTVolume, read_ct, write_like
from pancdiff.errors import InputError
from pancdiff.phantom import PhantomConfig, make_phantom

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-example"
SMALL = PhantomConfig(shape=(8, 48, 48), spacing=(4.0, 4.0, 5.0))


def _phantom() -> sitk.Image:
    return make_phantom(np.random.default_rng(0), SMALL)[0]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _refused(path, match: str, folder: Path, **kwargs) -> InputError:
    """read_ct must raise one line naming the file, and leave the folder as it was."""
    before = _files(folder)
    with pytest.raises(InputError, match=match) as info:
        read_ct(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert _files(folder) == before
    return info.value


def _image(array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    return image


def _write_dicom_series(folder: Path, uid: str, array: np.ndarray, z0: float) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, plane in enumerate(array):
        image = sitk.GetImageFromArray(plane)
        image.SetSpacing((0.8, 0.8))
        tags = {
            "0008|0060": "CT", "0020|000d": "1.2.826.0.1.1", "0020|000e": uid, "0008|0018": f"{uid}.{k + 1}",
            "0020|0013": str(k + 1), "0020|0032": f"-100\\-120\\{z0 + 2.5 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.8", "0018|0050": "2.5", "0028|1052": "0", "0028|1053": "1",
        }  # fmt: skip
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid}_{k:03d}.dcm"))
        writer.Execute(image)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_reads_file_formats_keeping_voxels_and_geometry(tmp_path, suffix):
    image = _phantom()
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(path))
    ct = read_ct(path)
    assert isinstance(ct, CTVolume)
    assert ct.array.dtype == np.float32
    assert ct.array.shape == tuple(reversed(image.GetSize()))
    np.testing.assert_array_equal(ct.array, sitk.GetArrayFromImage(image).astype(np.float32))
    np.testing.assert_allclose(ct.image.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ct.image.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(ct.image.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert ct.spacing_zyx == (5.0, 4.0, 4.0)


def test_reads_dicom_series_folder_with_geometry(tmp_path):
    array = np.full((5, 16, 16), -1000, np.int16)
    array[:, 4:12, 4:12] = 40
    _write_dicom_series(tmp_path, "1.2.826.0.1.7", array, z0=-30.0)
    ct = read_ct(tmp_path)
    assert ct.array.shape == (5, 16, 16)
    np.testing.assert_array_equal(ct.array, array)
    np.testing.assert_allclose(ct.image.GetOrigin(), (-100, -120, -30))
    np.testing.assert_allclose(ct.image.GetSpacing(), (0.8, 0.8, 2.5))


def test_folder_with_two_series_asks_which_then_reads_the_chosen_one(tmp_path):
    array = np.full((4, 16, 16), -1000, np.int16)
    _write_dicom_series(tmp_path, "1.2.826.0.1.1", array, z0=0.0)
    _write_dicom_series(tmp_path, "1.2.826.0.1.2", array + 30, z0=100.0)
    error = _refused(tmp_path, "2 DICOM series", tmp_path)
    assert "1.2.826.0.1.1" in str(error) and "1.2.826.0.1.2" in str(error) and "series_uid" in str(error)
    ct = read_ct(tmp_path, series_uid="1.2.826.0.1.2")
    assert ct.array.min() == -970
    assert ct.image.GetOrigin()[2] == pytest.approx(100.0)
    _refused(tmp_path, "no DICOM series '9.9'", tmp_path, series_uid="9.9")


def test_missing_path_is_refused(tmp_path):
    _refused(tmp_path / "nope.nii.gz", "not found", tmp_path)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a CT")
    _refused(tmp_path, "no DICOM series", tmp_path)


def test_unreadable_file_is_refused(tmp_path):
    for name in ("ct.nii.gz", "ct.mha", "ct.nrrd"):
        (tmp_path / name).write_bytes(os.urandom(2000))
        _refused(tmp_path / name, "unreadable", tmp_path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
def test_truncated_file_is_refused(tmp_path, suffix):
    # ITK reads a truncated NIfTI silently, filling zeros: the reader must notice by itself.
    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(_phantom(), str(full), useCompression=False)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    _refused(cut, "truncated", tmp_path)


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "slice.mha"
    sitk.WriteImage(_image(np.full((32, 32), -1000, np.int16)), str(path))
    _refused(path, "2D", tmp_path)


def test_4d_image_is_refused(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([_phantom(), _phantom()]), str(path))
    _refused(path, "4D", tmp_path)


def test_rgb_image_is_refused(tmp_path):
    grey = sitk.GetImageFromArray(np.full((4, 16, 16), 100, np.uint8))
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.Compose([grey, grey, grey]), str(path))
    _refused(path, "3 channels", tmp_path)
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    _refused(png, "channels", tmp_path)


@pytest.mark.parametrize(
    "kind", ["uint8_0_255", "mr_0_4000", "ct_without_rescale_0_4095", "mr_with_few_noisy_negative_voxels"]
)
def test_non_hu_data_is_refused(tmp_path, kind):
    rng = np.random.default_rng(1)
    if kind == "uint8_0_255":
        array = rng.integers(0, 256, (8, 32, 32)).astype(np.uint8)
    elif kind == "mr_0_4000":
        array = rng.uniform(0, 4000, (8, 32, 32)).astype(np.float32)
    elif kind == "ct_without_rescale_0_4095":
        array = sitk.GetArrayFromImage(_phantom()).astype(np.int32) + 1024  # air at 0, raw stored values
        array = array.astype(np.uint16)
    else:
        array = rng.uniform(0, 4000, (8, 32, 32)).astype(np.float32)
        array.flat[:5] = -800  # a handful of outliers must not pass as air
    path = tmp_path / "volume.nii.gz"
    sitk.WriteImage(_image(array), str(path))
    _refused(path, "not a CT in Hounsfield units", tmp_path)


def test_tight_abdominal_crop_with_a_gas_bubble_is_accepted(tmp_path):
    array = np.full((8, 40, 40), 40.0, np.float32)
    array[3:6, 10:20, 10:20] = -950  # 300 voxels of bowel gas, no air outside the body
    path = tmp_path / "crop.nii.gz"
    sitk.WriteImage(_image(array), str(path))
    assert read_ct(path).array.min() == -950


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])  # ITK's NIfTI reader already turns NaN into 0
def test_nan_voxels_are_refused(tmp_path, suffix):
    array = sitk.GetArrayFromImage(_phantom()).astype(np.float32)
    array[4, 20, 20] = np.nan
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(_image(array), str(path))
    _refused(path, "1 NaN", tmp_path)


def test_write_like_keeps_the_reference_geometry_exactly(tmp_path):
    reference = _phantom()
    theta = np.deg2rad(17)
    reference.SetDirection((np.cos(theta), -np.sin(theta), 0, np.sin(theta), np.cos(theta), 0, 0, 0, 1))
    values = np.random.default_rng(0).random(tuple(reversed(reference.GetSize()))).astype(np.float32)
    out = write_like(values, reference, tmp_path / "sub" / "map.nii.gz")
    assert _files(tmp_path) == {"sub", "sub/map.nii.gz"}  # no temporary file left behind
    back = sitk.ReadImage(str(out))
    np.testing.assert_allclose(back.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(back.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), values)
    with pytest.raises(ValueError, match="does not match"):
        write_like(values[:-1], reference, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


@pytest.mark.shared_data
def test_reads_the_real_nifti_ct_and_dicom_series():
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not present at {SHARED}")
    ct = read_ct(SHARED / "example_ct_sm.nii.gz")
    assert ct.array.shape == (30, 101, 122)
    assert ct.array.min() <= -1000
    dicom = read_ct(SHARED / "example_ct_dicom")
    assert dicom.array.shape == (20, 512, 512)
    np.testing.assert_allclose(dicom.image.GetSpacing(), (0.9765625, 0.9765625, 2.0))
    assert dicom.array.min() == -1024
