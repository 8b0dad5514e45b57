"""CT -> canvases -> back: orientation, windowing, support, tiling, and exact paste-back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pancdiff.config import PreprocessConfig
from pancdiff.ctio import CTVolume, read_ct
from pancdiff.errors import InputError
from pancdiff.pancreas import pancreas_mask
from pancdiff.preprocess import Reorientation, extract_slices, paste_back, to_canvases
from scipy import ndimage

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-example"


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _grid(size_xyz, spacing, origin, direction) -> sitk.Image:
    image = sitk.Image([int(n) for n in size_xyz], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


def _world_points(image: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) LPS position of every voxel center, from the image geometry alone."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float) * np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + index @ direction.T


def _ct(image: sitk.Image, array: np.ndarray) -> CTVolume:
    out = sitk.GetImageFromArray(array.astype(np.int16))
    out.CopyInformation(image)
    return CTVolume(image=out, array=array.astype(np.float32), path=Path("synthetic.nii.gz"))


@pytest.mark.parametrize(
    "direction",
    [
        np.eye(3),
        np.diag([-1.0, -1.0, 1.0]),
        np.diag([1.0, 1.0, -1.0]),
        np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),  # stored sagittal-first
        _rotation(2, 25) @ _rotation(0, 12) @ np.diag([-1.0, -1.0, 1.0]),  # oblique
    ],
    ids=["LPS", "RAS", "LPI", "permuted", "oblique"],
)
def test_lps_view_equals_sitk_dicomorient(direction):
    array = np.arange(4 * 5 * 7, dtype=np.float32).reshape(4, 5, 7)
    image = sitk.GetImageFromArray(array)
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    image.SetSpacing((0.7, 1.1, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    reo = Reorientation.from_image(image)
    expected = sitk.DICOMOrient(image, "LPS")
    np.testing.assert_array_equal(reo.apply(array), sitk.GetArrayFromImage(expected))
    assert reo.spacing(image) == pytest.approx(tuple(reversed(expected.GetSpacing())))


@pytest.mark.parametrize(
    "direction",
    [
        _rotation(2, 25) @ _rotation(0, 10) @ np.diag([-1.0, -1.0, 1.0]),
        np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]) @ _rotation(1, 8),
    ],
    ids=["oblique-RAS", "oblique-permuted"],
)
def test_round_trip_lands_a_blob_on_the_right_voxels(direction):
    """A dark sphere placed in world coordinates, found on the canvases, pasted back: same voxels."""
    spacing = (0.9, 1.3, 3.0)
    probe = _grid((44, 40, 14), spacing, (-37.2, 81.5, -612.0), direction)
    world = _world_points(probe)
    center = world.reshape(-1, 3).mean(axis=0)
    blob_center = center + np.array([4.0, -3.0, 1.0])  # off the pancreas center: a flip would show
    blob = np.linalg.norm(world - blob_center, axis=-1)
    pancreas = np.linalg.norm(world - center, axis=-1) <= 16.0
    hu = np.where(blob <= 6.0, -80.0, 40.0)
    hu[:, :2, :] = -1000.0  # some air
    ct = _ct(probe, hu)
    cfg = PreprocessConfig(image_size=48, pixel_spacing_mm=0.8, support_mm=36.0, margin_mm=3.0)
    batch = extract_slices(ct, pancreas, cfg)
    axial = batch.reorientation.axes[0]
    other_axes = tuple(a for a in range(3) if a != axial)
    assert set(batch.slice_index.tolist()) == set(np.flatnonzero(pancreas.any(axis=other_axes)).tolist())

    found = ((batch.canvases < 0.33) & batch.valid).astype(np.float32)  # -80 HU -> 0.18, 40 HU -> 0.48
    pasted = paste_back(found, batch) > 0.5
    truth = blob <= 6.0
    assert truth.sum() > 50
    dice = 2 * (pasted & truth).sum() / (pasted.sum() + truth.sum())
    assert dice > 0.85
    tolerance = max(spacing[:2]) * 1.2
    assert pasted[blob <= 6.0 - tolerance].all()  # the core is never missed
    assert not pasted[blob > 6.0 + tolerance].any()  # nothing lands away from it
    centroid = world[pasted].mean(axis=0)
    assert np.linalg.norm(centroid - world[truth].mean(axis=0)) < 0.5


def _lps_anatomy() -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """A CT drawn in LPS order (S, P, L) with a marker at the patient's left-anterior."""
    shape = (6, 60, 70)
    hu = np.full(shape, 40.0, np.float32)
    hu[:, :3] = -1000
    mask = np.zeros(shape, bool)
    mask[1:5, 20:40, 15:55] = True
    hu[:, 22:26, 45:50] = 200  # anterior (low rows), patient left (high L index)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.8, 0.9, 2.0))
    image.SetOrigin((-12.0, 40.0, -300.0))
    return image, hu, mask


@pytest.mark.parametrize("storage", ["LPS", "RAS", "PIR", "SAL"])
def test_canvases_are_in_radiological_orientation_whatever_the_storage(storage):
    image, hu, mask = _lps_anatomy()
    cfg = PreprocessConfig(image_size=64, pixel_spacing_mm=1.0, support_mm=60.0, margin_mm=2.0)
    reference = extract_slices(CTVolume(image, hu, Path("lps")), mask, cfg)
    stored = sitk.DICOMOrient(image, storage)
    mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_image.CopyInformation(image)
    stored_mask = sitk.GetArrayFromImage(sitk.DICOMOrient(mask_image, storage)) > 0
    batch = extract_slices(CTVolume(stored, sitk.GetArrayFromImage(stored), Path(storage)), stored_mask, cfg)
    np.testing.assert_allclose(batch.canvases, reference.canvases, atol=1e-6)
    np.testing.assert_array_equal(batch.valid, reference.valid)
    # The marker is up (anterior) and to the right of the screen (patient left).
    rows, cols = np.nonzero(batch.canvases[1] > 0.8)
    assert rows.mean() < 31.5 and cols.mean() > 31.5
    # And paste-back returns to the stored array's own order.
    back = paste_back(batch.canvases, batch)
    marker = (sitk.GetArrayFromImage(stored) >= 200) & _support_of(batch)
    assert marker.sum() == 4 * 4 * 5  # the marker in the 4 analysed slices
    assert back[marker].min() > 0.6
    assert back[~ndimage.binary_dilation(marker)].max() < 0.6


def _support_of(batch) -> np.ndarray:
    return paste_back(np.ones_like(batch.canvases), batch) > 0.5


def test_hu_window_maps_to_unit_range():
    image, hu, mask = _lps_anatomy()
    regions = np.zeros(hu.shape, np.float32)
    for label, (c0, c1, value) in enumerate([(15, 30, -400), (30, 45, 50), (45, 55, 400)], start=1):
        hu[:, 20:40, c0:c1] = value
        regions[:, 20:40, c0:c1] = label
    batch = extract_slices(CTVolume(image, hu, Path("x")), mask, PreprocessConfig(margin_mm=0.0, image_size=64))
    labels = np.rint(to_canvases(regions, batch, order=0))
    for label, expected in ((1, 0.0), (2, 0.5), (3, 1.0)):  # -400 clipped, mid-window, 400 clipped
        inner = ndimage.binary_erosion(labels == label, np.ones((1, 3, 3)))
        assert inner.sum() > 20
        np.testing.assert_allclose(batch.canvases[inner], expected, atol=1e-5)


def test_wide_pancreas_is_tiled_and_tiles_cover_the_support_exactly():
    image, hu, _ = _lps_anatomy()
    mask = np.zeros(hu.shape, bool)
    mask[2:4, 25:32, 5:65] = True  # 60 px * 0.8 mm = 48 mm wide
    cfg = PreprocessConfig(image_size=32, pixel_spacing_mm=1.0, support_mm=20.0, margin_mm=2.0)
    batch = extract_slices(CTVolume(image, hu, Path("x")), mask, cfg)
    # Support: box dilated by floor(2 / 0.9) = 2 rows and floor(2 / 0.8) = 2 cols -> 64 px = 51.2 mm wide.
    expected = np.zeros(hu.shape, bool)
    expected[2:4, 23:34, 3:67] = True
    assert len(batch) == 2 * 3  # ceil(51.2 / 20) = 3 tiles across, 11 rows * 0.9 mm fit in one
    for valid in batch.valid:
        _, cols = np.nonzero(valid)
        assert (cols.max() - cols.min() + 1) * cfg.pixel_spacing_mm <= cfg.support_mm + 1.0
    np.testing.assert_array_equal(_support_of(batch), expected)


def test_overlapping_tiles_combine_by_max_or_mean():
    image, hu, _ = _lps_anatomy()
    mask = np.zeros(hu.shape, bool)
    mask[2, 25:32, 5:65] = True
    batch = extract_slices(
        CTVolume(image, hu, Path("x")), mask, PreprocessConfig(image_size=32, support_mm=20.0, margin_mm=2.0)
    )
    values = np.array([0.2, 0.6, 1.0][: len(batch)], np.float32)
    maps = np.broadcast_to(values[:, None, None], batch.canvases.shape)
    cover = [np.zeros(hu.shape[1:], bool) for _ in range(len(batch))]
    for b, tile in enumerate(batch.supports):
        cover[b][tile.slices] = tile.mask
    overlap = cover[0] & cover[1]
    assert overlap.any()
    assert np.allclose(paste_back(maps, batch, reduce="max")[2][overlap], 0.6)
    assert np.allclose(paste_back(maps, batch, reduce="mean")[2][overlap], 0.4)
    assert np.allclose(paste_back(maps, batch)[2][cover[0] & ~cover[1]], 0.2)


def test_remove_surroundings_keeps_only_the_dilated_mask():
    image, hu, _ = _lps_anatomy()
    rows, cols = np.mgrid[:60, :70]
    distance = np.hypot((rows - 30) * 0.9, (cols - 35) * 0.8)  # mm from the disc's center
    mask = np.zeros(hu.shape, bool)
    mask[2] = distance <= 10.0
    box = extract_slices(CTVolume(image, hu, Path("x")), mask, PreprocessConfig(margin_mm=4.0))
    tight = extract_slices(
        CTVolume(image, hu, Path("x")), mask, PreprocessConfig(margin_mm=4.0, remove_surroundings=True)
    )
    support = _support_of(tight)[2]
    assert support[distance <= 13.0].all() and not support[distance > 14.9].any()
    assert _support_of(box)[2].sum() > support.sum() * 1.2  # the box keeps the corners


def test_labels_follow_the_same_transform_as_the_canvas():
    image, hu, mask = _lps_anatomy()
    marker = hu >= 200
    batch = extract_slices(CTVolume(image, hu, Path("x")), mask, PreprocessConfig(margin_mm=2.0, image_size=64))
    on_canvas = to_canvases(marker.astype(np.float32), batch) > 0.5
    assert on_canvas.any()
    assert batch.canvases[on_canvas].min() > 0.8 and batch.canvases[batch.valid & ~on_canvas].max() < 0.8


def test_bad_masks_are_refused():
    image, hu, mask = _lps_anatomy()
    ct = CTVolume(image, hu, Path("ct.nii.gz"))
    with pytest.raises(InputError, match="ct.nii.gz: the pancreas mask is empty"):
        extract_slices(ct, np.zeros_like(mask), PreprocessConfig())
    with pytest.raises(ValueError, match="shape"):
        extract_slices(ct, mask[:-1], PreprocessConfig())


@pytest.mark.shared_data
def test_real_ct_round_trip_covers_every_pancreas_voxel():
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not present at {SHARED}")
    ct = read_ct(SHARED / "example_ct_sm.nii.gz")
    mask = pancreas_mask(ct, SHARED / "pancreas.nii.gz")
    cfg = PreprocessConfig()
    batch = extract_slices(ct, mask, cfg)
    assert set(batch.slice_index.tolist()) == set(np.flatnonzero(mask.any(axis=(1, 2))).tolist())
    assert batch.canvases.shape[1:] == (cfg.image_size, cfg.image_size)
    assert 0.0 <= batch.canvases.min() and batch.canvases.max() <= 1.0
    support = _support_of(batch)
    assert support[mask].all()
    assert not support[~mask.any(axis=(1, 2))].any()  # nothing outside analysed slices


@pytest.mark.slow
def test_full_size_ct_stays_under_3_gb():
    script = Path(__file__).with_name("bench_preprocess_memory.py")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(result)
    assert result["peak_rss_mb"] < 3000
