"""Stored pancreas-box crops (slice-folder format) turned into model canvases.

Every crop goes through the same cut whatever its label: a field of at most ``support_mm`` centred
on the pancreas (the organ mask's centroid where a label map exists, the crop centre otherwise),
optionally shrunk by a random fraction drawn the same way for every crop. Nothing here reads the
tumor label, so preprocessing cannot hand the classifier (or an evaluation) the answer. The crop
size itself still differs between the two hospitals of pancreas-tc; ``evaluate`` measures what that
alone would score, and the classifier trains on counterfactual pairs where it cannot help.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .canvas import CanvasTransform, pancreas_zone, to_model_input, zone_margin_px
from .config import PreprocessConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, identical for every class.

    Attributes:
        box_fraction: each side of the visible box is the crop's side times U(box_fraction)
            (capped at ``support_mm``); (1, 1) keeps the whole crop.
        shift_mm: uniform random shift of the canvas centre.
        rotate_deg: uniform random in-plane rotation.
        flip_lr: random left-right flips (off: anatomy is not left-right symmetric).
        intensity_scale: relative contrast jitter (fights global-intensity site differences).
        intensity_shift: additive jitter in window units.
        zoom: relative jitter of the canvas pixel spacing (anatomy drawn U(1 - zoom, 1 + zoom) larger).
        noise_hu: Gaussian noise of a standard deviation drawn from U(0, noise_hu) HU, added inside
            the support (scanners and dose differ; a lesion added after it sees the same noise).
        blur_px: Gaussian blur of a sigma drawn from U(0, blur_px) canvas pixels, inside the support,
            before the noise. Reconstruction kernels and slice thickness differ between hospitals:
            a classifier trained on two sites took smoothness for tumor (blurring NIH healthy crops
            by 1.5 px inside their support raised their p(tumor) from 0.27 to 0.58; the 3 mm sample
            CT, at 9.6 HU of fine texture against 22-24 in the training crops, scored 0.93 without a
            lesion). Blur up to 2 px took most of that shortcut away but not the site
            (``model_runs/20261126-blur-augmentation``).
    Rotation, flips, zoom and noise keep a classifier from memorising its ~800 training crops (the
    paired classifier reached AUROC 0.96 on them and 0.81 on the tuning half without them).
    """

    box_fraction: tuple[float, float] = (0.6, 1.0)
    shift_mm: float = 3.0
    rotate_deg: float = 0.0
    flip_lr: bool = False
    intensity_scale: float = 0.05
    intensity_shift: float = 0.02
    zoom: float = 0.0
    noise_hu: float = 0.0
    blur_px: float = 0.0


NO_AUGMENT = AugmentConfig(box_fraction=(1.0, 1.0), shift_mm=0.0, intensity_scale=0.0, intensity_shift=0.0)


@dataclass
class Canvas:
    """One model input and what travels with it, all (S, S).

    Attributes:
        x: float32 in [0, 1]. valid: bool support. organ: bool pancreas (or None). masks: named
        bool masks carried along (e.g. "tumor"), nearest-neighbour and clipped to the support.
    """

    x: np.ndarray
    valid: np.ndarray
    organ: np.ndarray | None = None
    masks: dict = field(default_factory=dict)


def smooth_inside(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` Gaussian-smoothed with weights from the support only (normalized convolution), so the
    fill outside never bleeds into the border."""
    w = ndimage.gaussian_filter(valid.astype(np.float32), sigma)
    num = ndimage.gaussian_filter(np.where(valid, x, 0.0).astype(np.float32), sigma)
    return np.where(w > 1e-6, num / np.maximum(w, 1e-6), x).astype(np.float32)


class CropSampler:
    """Canvases from stored crops; the same code path for training (random) and evaluation (seeded).

    Args:
        images: (H_i, W_i) float32 crops in [0, 1] (the pancreas box of one slice each).
        labels: 1 tumor, 0 healthy, per crop (kept for the caller; the cut never reads them).
        preprocess: model-input geometry (canvas size, pixel spacing, support size, fill).
        spacing_mm: pixel spacing of the stored crops (pancreas-tc: ~0.8 mm, not recorded per image).
        organs: (H_i, W_i) bool pancreas masks (organ incl. tumor) or None per crop.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[int],
        preprocess: PreprocessConfig,
        spacing_mm: float = 0.8,
        organs: list[np.ndarray | None] | None = None,
    ) -> None:
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.preprocess, self.spacing = preprocess, spacing_mm
        self.organs = list(organs) if organs is not None else [None] * len(images)
        if len(self.organs) != len(images):
            raise ValueError("one organ mask (or None) per image")

    def __len__(self) -> int:
        return len(self.images)

    def zone(self, c: Canvas) -> np.ndarray:
        """The pancreas zone of a canvas: its organ dilated by ``PreprocessConfig.margin_mm``."""
        return pancreas_zone(c.organ, c.valid, zone_margin_px(self.preprocess))

    def canvas(
        self, i: int, rng: np.random.Generator, aug: AugmentConfig = NO_AUGMENT, masks: dict | None = None
    ) -> Canvas:
        """Crop ``i`` as a model canvas, its organ mask and any (H, W) ``masks`` carried onto it."""
        image, organ = self.images[i], self.organs[i]
        h, w = image.shape
        limit = self.preprocess.support_mm / self.spacing
        frac = rng.uniform(*aug.box_fraction, size=2) if aug.box_fraction != (1.0, 1.0) else np.ones(2)
        box = np.maximum(np.round(np.minimum(np.array([h, w]) * frac, limit)), 1).astype(int)
        if organ is not None and organ.any():
            centre = np.argwhere(organ).mean(axis=0)
        else:
            centre = np.array([(h - 1) / 2, (w - 1) / 2])
        top = int(np.clip(round(centre[0] - (box[0] - 1) / 2), 0, h - box[0]))
        left = int(np.clip(round(centre[1] - (box[1] - 1) / 2), 0, w - box[1]))
        support = np.zeros((h, w), dtype=bool)
        support[top : top + box[0], left : left + box[1]] = True
        if self.preprocess.remove_surroundings and organ is not None and organ.any():
            grow = max(1, int(round(self.preprocess.margin_mm / self.spacing)))
            support &= ndimage.binary_dilation(organ, iterations=grow)
        centre = np.array([top + (box[0] - 1) / 2, left + (box[1] - 1) / 2])
        if aug.shift_mm:
            centre = centre + rng.uniform(-aug.shift_mm, aug.shift_mm, 2) / self.spacing
        transform = CanvasTransform(
            center=(float(centre[0]), float(centre[1])),
            spacing=(self.spacing, self.spacing),
            canvas_spacing=self.preprocess.pixel_spacing_mm * (1 + rng.uniform(-aug.zoom, aug.zoom) if aug.zoom else 1),
            size=self.preprocess.image_size,
        )
        x, valid = to_model_input(image, support, transform, self.preprocess.fill)

        def carry(m: np.ndarray) -> np.ndarray:
            return (transform.to_canvas(m.astype(np.float32), order=0) > 0.5) & valid

        organ_c = None if organ is None else carry(organ)
        carried = {k: carry(m) for k, m in (masks or {}).items()}
        if aug.rotate_deg:
            angle = rng.uniform(-aug.rotate_deg, aug.rotate_deg)

            def rot(m: np.ndarray) -> np.ndarray:
                return ndimage.rotate(m.astype(np.float32), angle, reshape=False, order=0) > 0.5

            x = ndimage.rotate(x, angle, reshape=False, order=1, cval=self.preprocess.fill)
            valid = rot(valid)
            x[~valid] = self.preprocess.fill
            organ_c = None if organ_c is None else rot(organ_c) & valid
            carried = {k: rot(m) & valid for k, m in carried.items()}
        if aug.flip_lr and rng.random() < 0.5:
            x, valid = x[:, ::-1].copy(), valid[:, ::-1].copy()
            organ_c = None if organ_c is None else organ_c[:, ::-1].copy()
            carried = {k: m[:, ::-1].copy() for k, m in carried.items()}
        if aug.intensity_scale or aug.intensity_shift:
            gain = 1 + rng.uniform(-aug.intensity_scale, aug.intensity_scale)
            offset = rng.uniform(-aug.intensity_shift, aug.intensity_shift)
            x = np.where(valid, np.clip(x * gain + offset, 0, 1), x).astype(np.float32)
        if aug.blur_px:
            blurred = smooth_inside(x, valid, rng.uniform(0, aug.blur_px))
            x = np.where(valid, blurred, x).astype(np.float32)
        if aug.noise_hu:
            lo, hi = self.preprocess.hu_window
            sigma = rng.uniform(0, aug.noise_hu) / (hi - lo)
            x = np.where(valid, np.clip(x + rng.normal(0, sigma, x.shape), 0, 1), x).astype(np.float32)
        return Canvas(x.astype(np.float32), valid, organ_c, carried)
