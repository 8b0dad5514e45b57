"""No edge artifacts, candidates only where a tumor can be.

The maps of a reconstruction model light up where the canvas support ends (crop border, tile seam,
fill, air): the model reconstructs a step it cannot see past. These tests prove the map is not used
there, that a flat soft-tissue phantom (nothing to find) gives no candidate with the bundled models,
and that candidates and peaks stay within the configured margin of the pancreas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pancdiff.config import DetectConfig, PreprocessConfig
from pancdiff.ctio import CTVolume
from pancdiff.errors import InputError
from pancdiff.markers import ImageGrid, fraction_within
from pancdiff.pipeline import detect_volume
from pancdiff.postprocess import AIR_LEVEL, evidence_maps, near_mask, peak_evidence, trusted_support
from pancdiff.preprocess import extract_slices, paste_back
from pancdiff.weights import bundled_model_dir, init_bundle, load_bundle
from scipy import ndimage

SPACING = (0.8, 0.8, 3.0)  # x, y, z mm


def _phantom(tissue_hu: float, noise_hu: float = 0.0, seed: int = 0, shape=(8, 120, 120)):
    """A body of one soft tissue in air; the 'pancreas' an elongated region inside (wide: two tiles)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    body = ((y - 60) / 55.0) ** 2 + ((x - 60) / 55.0) ** 2 <= 1
    pancreas = (((y - 60) / 12.0) ** 2 + ((x - 60) / 40.0) ** 2 <= 1) & (z >= 3) & (z <= 4)
    hu = np.full(shape, -1000.0)
    hu[body] = tissue_hu
    hu = (hu + rng.normal(0, noise_hu, shape)).astype(np.float32) if noise_hu else hu.astype(np.float32)
    return hu, pancreas


def _ct(hu: np.ndarray, name: str = "phantom") -> CTVolume:
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(SPACING)
    image.SetOrigin((-40.0, 12.0, 300.0))
    return CTVolume(image, hu, Path(name))


needs_models = pytest.mark.skipif(not (bundled_model_dir() / "model.json").is_file(), reason="bundled models absent")


@needs_models
@pytest.mark.parametrize("tissue_hu, noise_hu", [(40.0, 5.0), (100.0, 0.0)])
def test_flat_soft_tissue_phantom_gives_no_candidates(tissue_hu, noise_hu):
    hu, pancreas = _phantom(tissue_hu, noise_hu)
    bundle = load_bundle()
    det = detect_volume(_ct(hu), pancreas, bundle)
    assert len(np.unique(det.tile_slice)) == 2 and len(det.tile_slice) > 2  # wide enough to be tiled: seams
    assert det.candidates.sum() == 0
    assert det.heatmap.max() < det.cfg.threshold / 2, "nothing on a flat phantom comes near the threshold"


@needs_models
def test_without_the_edge_band_and_floor_the_input_map_lights_up_on_its_borders():
    """What the defaults guard against: |x - x_hat|'s strongest values sit on the support's edge. The
    guidance-difference map decodes both reconstructions from one latent, so that error cancels. At half
    the bundle's threshold, so the contrast between the maps is tested, not where a release put it."""
    hu, pancreas = _phantom(40.0)
    bundle = load_bundle()
    unguarded = {"edge_mm": 0.0, "min_anomaly": 0.0, "threshold": bundle.operating_point.threshold / 2}
    det = detect_volume(_ct(hu), pancreas, bundle, {**unguarded, "map_kind": "input"})
    assert det.candidates.sum() > 0
    det = detect_volume(_ct(hu), pancreas, bundle, {**unguarded, "map_kind": "guidance"})
    assert det.candidates.sum() == 0


def test_an_air_region_gives_no_candidates_even_with_random_weights():
    """Random weights change every pixel, so candidates exist; none may lie in air or within edge_mm of it."""
    hu, pancreas = _phantom(40.0)
    hu[:, 50:70, 30:50] = -1000.0  # a gas pocket across the pancreas region
    det = detect_volume(
        _ct(hu), pancreas, init_bundle(seed=0), {"steps": 2, "noise_level": 20, "threshold": 0.3, "min_anomaly": 0.0}
    )
    assert det.candidates.sum() > 0
    air = hu <= -150.0  # the bottom of the HU window: the canvas cannot tell it from the fill
    near_air = ndimage.distance_transform_edt(~air, sampling=SPACING[::-1]) <= 1.0  # air and the voxels touching it
    assert not (det.candidates & near_air).any()
    assert not (det.heatmap[air] > 0).any()


def test_candidates_and_peaks_stay_within_the_pancreas_margin():
    hu, pancreas = _phantom(40.0)
    cfg = {"steps": 2, "noise_level": 20, "threshold": 0.3, "min_anomaly": 0.0, "pancreas_margin_mm": 2.0}
    det = detect_volume(_ct(hu), pancreas, init_bundle(seed=1), cfg)
    assert det.candidates.sum() > 0
    distance = ndimage.distance_transform_edt(~pancreas, sampling=SPACING[::-1])
    assert distance[det.heatmap > 0].max() <= 2.0 + 1e-6
    for f in det.findings:
        if f.peak_ijk is not None:
            i, j, k = f.peak_ijk
            assert distance[k, j, i] <= 2.0 + 1e-6
    assert det.pancreas_coverage == pytest.approx(1.0)


def test_trusted_support_drops_the_edge_band_the_canvas_border_and_air():
    canvases = np.full((1, 32, 32), 0.5, dtype=np.float32)
    valid = np.zeros((1, 32, 32), dtype=bool)
    valid[0, 4:28, 0:20] = True  # touches the canvas's left border
    canvases[0, 14:17, 10:13] = 0.0  # air inside
    trusted = trusted_support(canvases, valid, edge_px=3)[0]
    assert not trusted[:, :3].any()  # canvas border counts as an edge
    assert not trusted[4:7].any() and not trusted[25:28].any() and not trusted[:, 17:20].any()
    assert not trusted[15, 7:16].any() and not trusted[11:20, 11].any()  # within 3 px of the air pocket
    assert trusted[15, 6] and trusted[10, 11]  # 4 px away
    assert trusted[8, 8] and trusted[22, 14]
    assert trusted_support(canvases, valid, edge_px=0)[0].sum() == valid.sum() - 9
    assert AIR_LEVEL < 0.05


def test_evidence_maps_ignore_the_border_and_need_the_floor():
    anomaly = np.full((2, 32, 32), 0.02, dtype=np.float32)
    anomaly[:, 0:3, :] = 0.5  # a bright border: would set the per-slice maximum
    anomaly[0, 15:19, 15:19] = 0.2  # a finding in slice 0 only
    trusted = np.zeros((2, 32, 32), dtype=bool)
    trusted[:, 6:26, 6:26] = True
    maps = evidence_maps(anomaly, trusted, DetectConfig(threshold=0.5, smooth_sigma_px=1.0, min_anomaly=0.05))
    assert maps[0, 17, 17] == pytest.approx(1.0, abs=0.05)  # the finding is the maximum, not the border
    assert not maps[:, :6].any()
    assert not maps[1].any()  # flat 0.02 everywhere: under the floor, however normalized


def test_the_peak_is_the_strongest_anomaly_even_where_the_calibrated_map_saturates():
    """A calibrated map is clipped at 1.0: a broad plateau and a stronger spot both read 1.0, and the
    map's argmax is the plateau's first pixel in raster order. The peak must be the spot."""
    anomaly = np.zeros((1, 32, 32), dtype=np.float32)
    anomaly[0, 6:14, 6:14] = 0.3  # broad, above map_scale: saturates
    anomaly[0, 20:23, 20:23] = 0.9  # the strongest evidence
    trusted = np.ones_like(anomaly, dtype=bool)
    cfg = DetectConfig(normalization="calibrated", map_scale=0.1, smooth_sigma_px=1.0, min_anomaly=0.0)
    maps = evidence_maps(anomaly, trusted, cfg)
    assert maps[0, 9, 9] == maps[0, 21, 21] == 1.0
    assert np.unravel_index(int(np.argmax(maps[0])), (32, 32))[0] < 14  # the tie goes to the plateau
    peaks = peak_evidence(anomaly, trusted, maps, cfg)
    assert np.unravel_index(int(np.argmax(peaks[0])), (32, 32)) == (21, 21)
    assert not peaks[maps == 0].any()  # never where the map shows nothing
    # Wider peak smoothing prefers the larger region once its mass outweighs the spot's height.
    wide = peak_evidence(anomaly, trusted, maps, DetectConfig(**{**cfg.__dict__, "peak_sigma_px": 6.0}))
    assert np.unravel_index(int(np.argmax(wide[0])), (32, 32))[0] < 14


@pytest.mark.parametrize("name", ["smooth_sigma_px", "peak_sigma_px"])
def test_smoothing_widths_are_checked(name):
    with pytest.raises(InputError, match=name):
        DetectConfig(**{name: -1.0})
    assert DetectConfig(peak_sigma_px=None, smooth_sigma_px=2.0).peak_sigma == 2.0
    assert DetectConfig(peak_sigma_px=4.0).peak_sigma == 4.0


def test_finding_peaks_do_not_depend_on_where_the_calibrated_map_saturates():
    """Peaks come from the unclipped evidence: the same voxels whether the map is clipped nearly
    everywhere (tiny map_scale) or nowhere (huge map_scale)."""
    hu, pancreas = _phantom(40.0)
    base = {"steps": 2, "noise_level": 20, "min_anomaly": 0.0, "normalization": "calibrated"}
    saturated = detect_volume(_ct(hu), pancreas, init_bundle(seed=3), {**base, "map_scale": 1e-6})
    plain = detect_volume(_ct(hu), pancreas, init_bundle(seed=3), {**base, "map_scale": 1e3})
    assert plain.heatmap.max() < 1.0
    ties = [(saturated.heatmap[f.slice_index] == 1.0).sum() for f in saturated.findings if f.peak_ijk]
    assert ties and min(ties) > 1  # the saturated map has many voxels at its maximum
    assert [f.peak_ijk for f in saturated.findings] == [f.peak_ijk for f in plain.findings]
    assert any(f.peak_ijk is not None for f in plain.findings)


def test_paste_back_with_a_trusted_support_leaves_untrusted_pixels_to_the_other_tile():
    hu, pancreas = _phantom(40.0)
    batch = extract_slices(_ct(hu), pancreas, PreprocessConfig())
    assert len(batch) > len(np.unique(batch.lps_index))  # tiled
    trusted = trusted_support(batch.canvases, batch.valid, edge_px=3)
    ones = np.ones_like(batch.canvases)
    whole = paste_back(ones, batch) > 0.5
    used = paste_back(ones, batch, valid=trusted) > 0.5
    assert used.sum() < whole.sum() and not (used & ~whole).any()
    assert used[pancreas].all()  # the pancreas itself is seen with context by some tile


def test_near_mask_measures_millimetres_on_an_anisotropic_grid():
    mask = np.zeros((9, 30, 30), dtype=bool)
    mask[4, 15, 15] = True
    near = near_mask(mask, (3.0, 0.8, 0.8), 2.5)
    assert near[4, 15, 12] and not near[4, 15, 11]  # 2.4 mm in, 3.2 mm out
    assert not near[3, 15, 15]  # one slice away is 3 mm
    assert near_mask(mask, (3.0, 0.8, 0.8), 0.0).sum() == 1


def test_fraction_within_is_the_chance_level_of_a_hit():
    region = np.zeros((4, 20, 20), dtype=bool)
    region[1:3, 5:15, 5:15] = True  # 200 voxels
    target = np.zeros_like(region)
    target[1, 5, 5] = True
    grid = ImageGrid((0.0, 0.0, 0.0), (1.0, 1.0, 10.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (20, 20, 4))
    assert fraction_within(region, target, grid, 1.0) == pytest.approx(3 / 200)  # itself and 2 in-plane
    assert fraction_within(region, np.zeros_like(region), grid, 5.0) == 0.0
    assert fraction_within(region, region, grid, 0.0) == 1.0


@pytest.mark.parametrize("field, value", [("edge_mm", -1.0), ("min_anomaly", 1.0), ("pancreas_margin_mm", -2.0)])
def test_post_processing_settings_are_validated(field, value):
    with pytest.raises(InputError, match=field.replace("_mm", "").replace("_", " ").split()[0]):
        DetectConfig(**{field: value})
