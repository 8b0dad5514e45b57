"""A synthetic abdominal CT phantom in HU, written in the MSD Task07 layout with labels.

Not anatomy, but close enough in the ways the pipeline and a small model care about: air outside a
body with a fat rim, liver, spleen, kidneys, spine, aorta / IVC / SMV / SMA, bowel with gas in
mesenteric fat, and a lobulated, elongated pancreas rising from head (patient right, lower) to tail
(patient left, higher) over several slices, with optional hypodense tumors. Every tissue carries
smooth texture noise plus white noise, so a model sees texture rather than flat shapes.

The anatomy is drawn in an LPS-ordered array (superior, posterior, patient-left increasing) and
stored in the orientation of ``PhantomConfig.direction`` (default: RAS-like, as most NIfTI files),
at a non-zero origin, so tests exercise the same reorientation and geometry real data needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .outputs import OutputDir
from .preprocess import Reorientation
from .progress import QUIET, Reporter

LABELS = {"0": "background", "1": "pancreas", "2": "cancer"}


@dataclass(frozen=True)
class PhantomConfig:
    """Geometry and contents of one phantom volume.

    Attributes:
        shape: (z, y, x) voxels in the LPS-ordered drawing (superior, posterior, left).
        spacing: (x, y, z) voxel size in mm, SimpleITK order.
        direction: 3x3 direction cosines (row-major, SimpleITK); signed axis permutations only.
        center: LPS world position (mm) of the volume center; makes the origin non-zero.
        tumor_radius_mm: range of the tumor's mean radius.
        tumor_contrast_hu: range of how much darker than pancreas the tumor core is.
    """

    shape: tuple[int, int, int] = (24, 128, 128)
    spacing: tuple[float, float, float] = (1.5, 1.5, 3.0)
    direction: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    center: tuple[float, float, float] = (12.5, -30.0, -410.0)
    tumor_radius_mm: tuple[float, float] = (5.0, 9.0)
    tumor_contrast_hu: tuple[float, float] = (25.0, 55.0)


def make_phantom(
    rng: np.random.Generator, cfg: PhantomConfig = PhantomConfig(), tumor: bool = False
) -> tuple[sitk.Image, sitk.Image]:
    """One phantom CT and its label map.

    Returns:
        (ct, labels): int16 HU image and uint8 labels (1 pancreas, 2 tumor) with identical geometry.
    """
    hu, labels = _draw(rng, cfg, tumor)
    return _to_image(hu.astype(np.int16), cfg), _to_image(labels, cfg)


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int = 10,
    seed: int = 0,
    tumor_fraction: float = 0.5,
    cfg: PhantomConfig = PhantomConfig(),
    reporter: Reporter = QUIET,
) -> Path:
    """Write ``cases`` phantoms as an MSD Task07-style dataset.

    Layout: ``imagesTr/phantom_NNN.nii.gz`` (int16 HU), ``labelsTr/phantom_NNN.nii.gz`` (uint8, 1
    pancreas, 2 tumor) and ``dataset.json``. Exactly ``round(cases * tumor_fraction)`` cases hold a
    tumor. Written into a temporary folder and renamed, so a failure leaves nothing behind.
    """
    out_dir = Path(out_dir)
    if cases < 1:
        raise InputError(f"{out_dir}: number of cases must be >= 1, got {cases}")
    if not 0.0 <= tumor_fraction <= 1.0:
        raise InputError(f"{out_dir}: tumor fraction must be in [0, 1], got {tumor_fraction}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: exists and is not an empty folder; choose a new output folder")
    n_tumor = round(cases * tumor_fraction)
    seeds = np.random.SeedSequence(seed).spawn(cases + 1)
    with_tumor = set(np.random.default_rng(seeds[-1]).permutation(cases)[:n_tumor].tolist())
    with OutputDir(out_dir) as tmp:  # staged beside out_dir, moved into place whole
        (tmp / "imagesTr").mkdir(parents=True)
        (tmp / "labelsTr").mkdir()
        training = []
        with reporter.task("phantom", total=cases, unit="case") as task:
            for i in range(cases):
                ct, labels = make_phantom(np.random.default_rng(seeds[i]), cfg, tumor=i in with_tumor)
                name = f"phantom_{i:03d}.nii.gz"
                sitk.WriteImage(ct, str(tmp / "imagesTr" / name), useCompression=True)
                sitk.WriteImage(labels, str(tmp / "labelsTr" / name), useCompression=True)
                training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
                task.update()
        meta = {
            "name": "PancDiffPhantom",
            "description": "Synthetic abdominal CT phantoms (pancdiff.phantom), MSD Task07 layout",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": LABELS,
            "numTraining": cases,
            "numTest": 0,
            "training": training,
            "test": [],
            "seed": seed,
            "tumor_cases": sorted(f"phantom_{i:03d}" for i in with_tumor),
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out_dir


# --- drawing -----------------------------------------------------------------------------------


def _to_image(array_lps: np.ndarray, cfg: PhantomConfig) -> sitk.Image:
    """Store an LPS-ordered drawing in the orientation of ``cfg.direction``."""
    probe = sitk.Image(2, 2, 2, sitk.sitkUInt8)
    probe.SetDirection(cfg.direction)
    reo = Reorientation.from_image(probe)
    stored_shape = [0, 0, 0]
    for lps_axis, axis in enumerate(reo.axes):
        stored_shape[axis] = array_lps.shape[lps_axis]
    stored = np.empty(stored_shape, dtype=array_lps.dtype)
    reo.apply(stored)[...] = array_lps
    image = sitk.GetImageFromArray(stored)
    spacing_zyx = [0.0, 0.0, 0.0]
    lps_spacing = (cfg.spacing[2], cfg.spacing[1], cfg.spacing[0])
    for lps_axis, axis in enumerate(reo.axes):
        spacing_zyx[axis] = lps_spacing[lps_axis]
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    image.SetDirection(cfg.direction)
    direction = np.asarray(cfg.direction).reshape(3, 3)
    half = (np.asarray(image.GetSize()) - 1) / 2.0 * np.asarray(image.GetSpacing())
    image.SetOrigin(tuple(np.asarray(cfg.center) - direction @ half))
    return image


def _smooth_noise(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return field / max(float(field.std()), 1e-6)


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def _draw(rng: np.random.Generator, cfg: PhantomConfig, tumor: bool) -> tuple[np.ndarray, np.ndarray]:
    nz, ny, nx = cfg.shape
    sx, sy, sz = cfg.spacing
    # World mm around the center; +x patient left, +y posterior, +z superior (LPS).
    z = ((np.arange(nz) - (nz - 1) / 2) * sz)[:, None, None]
    y = ((np.arange(ny) - (ny - 1) / 2) * sy)[None, :, None]
    x = ((np.arange(nx) - (nx - 1) / 2) * sx)[None, None, :]
    scale = min(nx * sx, ny * sy) / 192.0  # anatomy drawn for a 192 mm field of view
    zn = z / max(nz * sz / 2, 1e-6)  # -1 (inferior end) .. 1 (superior end)

    def jit(r: float) -> float:  # per-case variation of sizes, places and HU levels
        return rng.uniform(-r, r)

    dx, dy = jit(5) * scale, jit(4) * scale
    x, y = x - dx, y - dy
    shape = (nz, ny, nx)
    tex = _smooth_noise(rng, shape, (0.6, 2.4 / sx, 2.4 / sy))  # tissue texture, ~2.4 mm grain
    tex_fine = _smooth_noise(rng, shape, (0.4, 0.8, 0.8))
    zeros = np.zeros(shape, dtype=bool)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipse(x, y, 0, 0, (84 + jit(6)) * scale, (66 + jit(5)) * scale) | zeros
    inner = _ellipse(x, y, 0, 0, (76 + jit(3)) * scale, (58 + jit(3)) * scale) | zeros
    hu[body] = -100 + 12 * tex[body]  # subcutaneous fat
    muscle_wall = inner & ~_ellipse(x, y, 0, 0, 71 * scale, 53 * scale)
    hu[muscle_wall] = 50 + 8 * tex[muscle_wall]
    cavity = _ellipse(x, y, 0, 0, 71 * scale, 53 * scale) | zeros
    # Mesenteric fat with bowel loops (soft tissue) and a little gas in them.
    bowel_field = _smooth_noise(rng, shape, (1.0, 4.0 * 1.5 / sx, 4.0 * 1.5 / sy))
    bowel = cavity & (bowel_field > 0.3)
    gas = bowel & (_smooth_noise(rng, shape, (0.8, 1.5, 1.5)) > 2.0)
    hu[cavity] = -90 + 10 * tex[cavity]
    hu[bowel] = 35 + 10 * tex[bowel]
    hu[gas] = -850 + 40 * tex[gas]

    def paint(region, value, amp, texture=tex):
        region = region & cavity
        hu[region] = value + amp * texture[region]
        return region

    # Psoas, kidneys (lower half), liver (right, growing upwards), spleen and stomach (upper left).
    for side in (-1, 1):
        paint(_ellipse(x, y, side * 22 * scale, 38 * scale, 10 * scale, 13 * scale), 50, 6)
        kidney = _ellipse(x, y, side * 44 * scale, 32 * scale, 13 * scale, 20 * scale, side * 0.5) & (zn < 0.45)
        paint(kidney, 165 + jit(15), 10)
        paint(kidney & _ellipse(x, y, side * 40 * scale, 32 * scale, 5 * scale, 9 * scale, side * 0.5), 100, 8)
    liver_size = np.clip(0.55 + 0.45 * (zn + 0.3), 0.0, 1.0)
    paint(
        _ellipse(x, y, -47 * scale, -4 * scale, 36 * scale * liver_size, 44 * scale * liver_size) & (liver_size > 0.2),
        60 + jit(8),
        7,
    )
    paint(_ellipse(x, y, 52 * scale, 18 * scale, 15 * scale, 24 * scale, -0.4) & (zn > -0.1), 50 + jit(6), 6)
    stomach = _ellipse(x, y, 30 * scale, -36 * scale, 24 * scale, 16 * scale) & (zn > 0.35)
    paint(stomach, 35, 8)
    paint(stomach & _ellipse(x, y, 30 * scale, -40 * scale, 14 * scale, 7 * scale), -900, 20)

    vessels = {  # name: (mask, HU)
        "aorta": (_ellipse(x, y, 9 * scale, 18 * scale, 8 * scale, 8 * scale) | zeros, 185 + jit(15)),
        "ivc": (_ellipse(x, y, -14 * scale, 16 * scale, 9 * scale, 7 * scale) | zeros, 150 + jit(15)),
        "smv": (_ellipse(x, y, -3 * scale, -2 * scale, 5 * scale, 5 * scale) | zeros, 170 + jit(10)),
        "sma": (_ellipse(x, y, 6 * scale, 3 * scale, 3.5 * scale, 3.5 * scale) | zeros, 180 + jit(10)),
    }
    any_vessel = np.logical_or.reduce([m for m, _ in vessels.values()])

    # Peripancreatic fat, then the pancreas along a 3D centerline from head to tail.
    pancreas = _pancreas(rng, x, y, z, scale, shape, sz)
    pancreas &= cavity & ~ndimage.binary_dilation(any_vessel, iterations=1)
    halo = ndimage.binary_dilation(pancreas, iterations=2) & cavity
    hu[halo & ~pancreas] = -85 + 10 * tex[halo & ~pancreas]
    pancreas_hu = 95 + jit(10)
    paint(pancreas, pancreas_hu, 9)
    hu[pancreas] += 8 * tex_fine[pancreas]  # lobular texture

    # Vessels and spine last: they are in front of everything.
    for mask, value in vessels.values():
        paint(mask, value, 5)
    vertebra = _ellipse(x, y, 0, 38 * scale, 14 * scale, 13 * scale) | zeros
    hu[vertebra] = 700 + 60 * tex[vertebra]  # cortex
    core = _ellipse(x, y, 0, 38 * scale, 11.5 * scale, 10.5 * scale) | zeros
    hu[core] = 280 + 60 * tex[core]
    spinous = (_ellipse(x, y, 0, 57 * scale, 4 * scale, 6 * scale) | zeros) & inner
    hu[spinous] = 550 + 40 * tex[spinous]
    canal = _ellipse(x, y, 0, 53 * scale, 5 * scale, 4.5 * scale) | zeros
    hu[canal] = 20 + 5 * tex[canal]

    labels = pancreas.astype(np.uint8)
    if tumor:
        blob, region = _tumor(rng, x, y, z, pancreas, cfg, scale)
        # The mass replaces what is there (pancreas or the fat it pushes into) by darker tissue.
        near = ndimage.binary_dilation(pancreas, iterations=2) & ~any_vessel
        tumor_hu = pancreas_hu - rng.uniform(*cfg.tumor_contrast_hu) + 7 * tex
        hu = np.where(near, hu + (tumor_hu - hu) * blob, hu).astype(np.float32)
        labels[region] = 2

    # Partial volume, then quantum noise.
    hu = ndimage.gaussian_filter(hu, (0.0, 0.5, 0.5))
    hu += rng.normal(0.0, 10.0, shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071), labels


def _pancreas(rng, x, y, z, scale, shape, sz):
    """Lobulated tube around a head -> tail centerline, as a (z, y, x) bool mask."""
    t = np.linspace(0.0, 1.0, 48)

    def jit(r: float) -> float:
        return rng.uniform(-r, r)

    # Control points (x, y, z) in mm: head right of the SMV, neck in front of it, body over the
    # aorta, tail toward the spleen and higher up.
    ctrl = np.array(
        [
            [-22 + jit(3), -4 + jit(3), -9 + jit(3)],
            [-4 + jit(2), -13 + jit(2), -3 + jit(2)],
            [18 + jit(3), -10 + jit(3), 3 + jit(2)],
            [40 + jit(3), 6 + jit(3), 9 + jit(3)],
        ]
    ) * np.array([scale, scale, 1.0])
    k = np.linspace(0, 1, len(ctrl))
    line = np.stack([np.interp(t, k, ctrl[:, d]) for d in range(3)], axis=1)
    line = ndimage.gaussian_filter1d(line, 3, axis=0, mode="nearest")
    radius = np.interp(t, [0, 0.3, 0.7, 1], [10.5, 7.5, 7.0, 5.0]) * scale * rng.uniform(0.9, 1.15)
    radius = np.maximum(radius, 0.6 * sz)  # at least one slice thick
    best = np.full(shape, np.inf, dtype=np.float32)
    rad = np.zeros(shape, dtype=np.float32)
    for (px, py, pz), r in zip(line, radius):
        d = np.sqrt((x - px) ** 2 + (y - py) ** 2 + ((z - pz) * 1.3) ** 2)  # flatter in z
        d = np.broadcast_to(d, shape)
        closer = d < best
        best[closer], rad[closer] = d[closer], r
    lobules = _smooth_noise(rng, shape, (0.7, 1.2, 1.2))
    return best <= rad * (1.0 + 0.18 * lobules)


def _tumor(rng, x, y, z, pancreas, cfg, scale):
    """A blurred hypodense ellipsoid centered in the pancreas; returns (blob 0..1, label region)."""
    inside = np.argwhere(ndimage.binary_erosion(pancreas, iterations=1))
    if len(inside) == 0:
        inside = np.argwhere(pancreas)
    kz, ky, kx = inside[rng.integers(len(inside))]
    cx, cy, cz = float(x[0, 0, kx]), float(y[0, ky, 0]), float(z[kz, 0, 0])
    r = rng.uniform(*cfg.tumor_radius_mm) * scale
    axes = r * rng.uniform(0.8, 1.25, size=3)
    d = ((x - cx) / axes[0]) ** 2 + ((y - cy) / axes[1]) ** 2 + ((z - cz) / max(axes[2], cfg.spacing[2])) ** 2
    hard = np.broadcast_to(d <= 1.0, pancreas.shape).astype(np.float32)
    blob = ndimage.gaussian_filter(hard, (0.3, 1.5 / cfg.spacing[1] * 1.5, 1.5 / cfg.spacing[0] * 1.5))
    blob /= max(float(blob.max()), 1e-6)
    region = (blob >= 0.5) & ndimage.binary_dilation(pancreas, iterations=2)
    return blob, region


__all__ = ["LABELS", "PhantomConfig", "make_phantom", "write_phantom_dataset"]
