"""Stored pancreas-box crops (slice-folder format) turned into model canvases for training.

pancreas-tc's confound: tumor crops (MSD) are smaller boxes than healthy crops (NIH), so the
visible-box size alone predicts the label. ``size_match`` cuts each healthy crop to a box whose
size is drawn from the *tumor* crops' size distribution, at a random place inside it, so both
classes show boxes of the same size distribution (healthy pancreas tissue stays healthy when cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .canvas import CanvasTransform, to_model_input
from .config import PreprocessConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; all off except size matching and mild intensity jitter.

    Attributes:
        size_match: cut healthy crops to tumor-crop sizes (fights the crop-size confound).
        shift_mm: uniform random shift of the canvas center.
        rotate_deg: uniform random in-plane rotation.
        flip_lr: random left-right flips (off: anatomy is not left-right symmetric).
        intensity_scale: relative contrast jitter (fights global-intensity site differences).
        intensity_shift: additive jitter in window units.
    """

    size_match: bool = True
    shift_mm: float = 3.0
    rotate_deg: float = 0.0
    flip_lr: bool = False
    intensity_scale: float = 0.05
    intensity_shift: float = 0.02


NO_AUGMENT = AugmentConfig(shift_mm=0.0, intensity_scale=0.0, intensity_shift=0.0)


class CropSampler:
    """Canvases from stored crops; the same code path for training (random) and evaluation (seeded).

    Args:
        images: (H_i, W_i) float32 crops in [0, 1] (the pancreas box of one slice each).
        labels: 1 tumor, 0 healthy, per crop.
        preprocess: model-input geometry (canvas size, pixel spacing, support size, fill).
        spacing_mm: pixel spacing of the stored crops (pancreas-tc: ~0.8 mm, not recorded per image).
        reference_sizes_mm: (M, 2) box sizes healthy crops are matched to (tumor crops' sizes).
    """

    def __init__(
        self,
        images: list[np.ndarray],
        labels: list[int],
        preprocess: PreprocessConfig,
        spacing_mm: float = 0.8,
        reference_sizes_mm: np.ndarray | None = None,
    ) -> None:
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.preprocess, self.spacing = preprocess, spacing_mm
        if reference_sizes_mm is None:
            tumor = [im.shape for im, y in zip(images, labels) if y == 1]
            reference_sizes_mm = np.asarray(tumor, dtype=float) * spacing_mm if tumor else None
        self.reference_sizes_mm = reference_sizes_mm

    def __len__(self) -> int:
        return len(self.images)

    def sample(
        self, i: int, rng: np.random.Generator, aug: AugmentConfig = NO_AUGMENT
    ) -> tuple[np.ndarray, np.ndarray]:
        """Canvas and support of crop ``i``: ((S, S) float32 in [0, 1], (S, S) bool)."""
        canvas, valid, _ = self.sample_masked(i, rng, aug)
        return canvas, valid

    def sample_masked(
        self, i: int, rng: np.random.Generator, aug: AugmentConfig = NO_AUGMENT, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Like ``sample``, also carrying a (H, W) tumor mask onto the canvas (nearest neighbour)."""
        image = self.images[i]
        h, w = image.shape
        box = np.array([h, w], dtype=float)
        if aug.size_match and self.labels[i] == 0 and self.reference_sizes_mm is not None:
            box = np.minimum(box, self.reference_sizes_mm[rng.integers(len(self.reference_sizes_mm))] / self.spacing)
        box = np.maximum(np.minimum(box, self.preprocess.support_mm / self.spacing), 1.0)
        box = np.round(box).astype(int)
        top = rng.integers(0, h - box[0] + 1)
        left = rng.integers(0, w - box[1] + 1)
        support = np.zeros((h, w), dtype=bool)
        support[top : top + box[0], left : left + box[1]] = True
        center = np.array([top + (box[0] - 1) / 2, left + (box[1] - 1) / 2])
        if aug.shift_mm:
            center += rng.uniform(-aug.shift_mm, aug.shift_mm, 2) / self.spacing
        transform = CanvasTransform(
            center=(float(center[0]), float(center[1])),
            spacing=(self.spacing, self.spacing),
            canvas_spacing=self.preprocess.pixel_spacing_mm,
            size=self.preprocess.image_size,
        )
        canvas, valid = to_model_input(image, support, transform, self.preprocess.fill)
        mask_canvas = None if mask is None else (transform.to_canvas(mask.astype(np.float32), order=0) > 0.5) & valid
        if aug.rotate_deg:
            angle = rng.uniform(-aug.rotate_deg, aug.rotate_deg)
            canvas = ndimage.rotate(canvas, angle, reshape=False, order=1, cval=self.preprocess.fill)
            valid = ndimage.rotate(valid.astype(np.float32), angle, reshape=False, order=0) > 0.5
            canvas[~valid] = self.preprocess.fill
            if mask_canvas is not None:
                mask_canvas = ndimage.rotate(mask_canvas.astype(np.float32), angle, reshape=False, order=0) > 0.5
        if aug.flip_lr and rng.random() < 0.5:
            canvas, valid = canvas[:, ::-1].copy(), valid[:, ::-1].copy()
            mask_canvas = None if mask_canvas is None else mask_canvas[:, ::-1].copy()
        if aug.intensity_scale or aug.intensity_shift:
            gain = 1 + rng.uniform(-aug.intensity_scale, aug.intensity_scale)
            offset = rng.uniform(-aug.intensity_shift, aug.intensity_shift)
            canvas = np.where(valid, np.clip(canvas * gain + offset, 0, 1), canvas).astype(np.float32)
        return canvas, valid, mask_canvas
