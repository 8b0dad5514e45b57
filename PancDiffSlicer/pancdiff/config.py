"""Settings as frozen dataclasses, validated once at the edge (CLI, widget) and passed whole.

Each model directory stores its ``NetworkConfig``, ``ScheduleConfig`` and ``PreprocessConfig``
beside the weights, so inference always rebuilds exactly what was trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class ScheduleConfig:
    """DDPM noise schedule: linear beta from ``beta_start`` to ``beta_end`` over T steps."""

    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the epsilon-UNet and of the noisy classifier (the UNet's encoder half).

    Defaults are sized for training on a 2-core CPU in about two hours (64x64 crops).
    ``classifier_pooling``: "mean" (global average, the first bundle) or "lse" (per-position logits
    and a smooth max, which keeps a small lesion's evidence and puts the gradient on it).
    ``classifier_zone``: the LSE pool sees only the pancreas zone (organ + ``PreprocessConfig.margin_mm``)
    that callers pass with each canvas; healthy structures outside the organ cannot raise p(tumor).
    """

    image_size: int = 64
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 8
    num_head_channels: int = 16
    classifier_channels: tuple[int, ...] = (32, 64, 128)
    classifier_attention_levels: tuple[bool, ...] = (False, False, False)
    classifier_pooling: str = "mean"
    classifier_zone: bool = False


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT slice (or a stored crop) becomes a model input.

    Attributes:
        image_size: side of the square model input in pixels.
        pixel_spacing_mm: physical size of one model pixel; CT slices are resampled to it.
        hu_window: HU mapped to 0 and 1 (clipped outside).
        support_mm: largest side of the visible box in one input; wider pancreas slices are tiled.
        remove_surroundings: zero everything outside the dilated pancreas mask (the paper's step)
            instead of outside the pancreas bounding box.
        margin_mm: dilation of the pancreas mask or box, so a tumor at the border is kept.
        fill: value outside the visible region (0 = the bottom of the HU window).
    """

    image_size: int = 64
    pixel_spacing_mm: float = 1.0
    hu_window: tuple[float, float] = (-150.0, 250.0)
    support_mm: float = 56.0
    remove_surroundings: bool = False
    margin_mm: float = 5.0
    fill: float = 0.0


GUIDANCE_STEPS = ("paper", "integrated", "extrapolated")
"""How a decode step weighs the classifier gradient (``pancdiff.diffusion.ddim_decode``)."""

MAP_KINDS = ("input", "guidance", "input_signed", "guidance_signed")
"""What the anomaly map compares (``DetectConfig.map_kind``, ``pancdiff.detection.map_from``)."""


def needs_unguided(map_kind: str) -> bool:
    """Whether the map compares with the unguided decode (and so costs it)."""
    return map_kind.startswith("guidance")


GRID_POWERS = (1.0, 4.0)
"""The range of step-grid powers (``pancdiff.diffusion.step_grid``): 1 is the paper's even grid."""


@dataclass(frozen=True)
class DetectConfig:
    """One detection run (Algorithm 1 with a step grid).

    Attributes:
        scale: classifier guidance scale S (0 = plain reconstruction).
        noise_level: N on the 1000-step scale.
        steps: K <= N DDIM steps to reach N (K = N is the paper-exact run).
        threshold: fraction of the normalized map that becomes a candidate.
        smooth_sigma_px: Gaussian smoothing of the map before normalizing (0 = off).
        peak_sigma_px: Gaussian smoothing of the evidence a slice's peak (its "finding" position) is
            taken from; None = ``smooth_sigma_px``. The peak is the maximum of the *unclipped*
            smoothed anomaly, so a calibrated map saturated at 1.0 cannot tie (``postprocess.peak_evidence``).
        normalization: "slice" divides each slice's map by its maximum (the paper: every slice then
            has a candidate); "calibrated" divides by ``map_scale``, a model constant measured on
            healthy validation slices, so values compare across slices and patients.
        map_scale: anomaly value that maps to 1.0 under "calibrated" normalization.
        batch_size: slices per batch; None adapts to the device's memory.
        device: "auto" (cuda, then mps, then cpu), "cuda", "mps" or "cpu".
        edge_mm: the map is not used within this distance of a canvas support's edge (crop border,
            tile seam, fill, air), where reconstructions fail whatever the tissue
            (``pancdiff.postprocess``).
        min_anomaly: smoothed |x - x_hat| (as a fraction of the HU window: 0.05 = 20 HU of the
            default 400 HU window) below which no voxel becomes a candidate; per-slice normalization
            would otherwise make a candidate of pure noise. 0 = off.
        pancreas_margin_mm: heatmap, candidates and peaks only within this distance of the pancreas
            mask, where a pancreatic tumor can be.
        guidance: "noisy" (the paper: the classifier sees x_t and t) or "x0" (the classifier sees
            the UNet's predicted clean slice at t = 0, where it separates lesions best).
        map_kind: "input" (the paper: |x - x_hat|) or "guidance" (|x_hat_unguided - x_hat|, both
            decoded from the same latent, so the inversion's own error cancels; K - 1 more UNet
            passes, as the two decodes share their first); "input_signed" / "guidance_signed" keep
            only what the healthy-ward decode brightened (x_hat - x, x_hat - x_hat_unguided, clipped
            at 0): a hypoattenuating tumor is brightened, a darkened spot is never one
            (``map_from``).
        solver: "ddim" (the paper's first-order steps) or "dpm2m" (DPM-Solver++(2M): second order,
            same passes, closer to the K = N run at small K).
        grid_power: step grid t_k = N (k / K)^power: 1 = even (the paper); > 1 puts more steps at
            low t, where the guidance acts (``pancdiff.diffusion.step_grid``).
        guidance_step: how a decode step weighs the classifier gradient: "paper" (Algorithm 1),
            "integrated" or "extrapolated" (``pancdiff.diffusion.ddim_decode``); the last two only
            remove step-size error, so few steps agree better with the K = N run.
        saliency_weight: w > 0 makes the map max(map, w |grad_x log p(healthy | x, t = 0)|): the
            guided map with the classifier's own gradient on the input, which finds what the guided
            decode spreads thin. It is the backward of the confidence pass detection already makes,
            so it adds no network pass. The release sets w to the ratio of the two maps' healthy
            scales (``model_runs/20261128-saliency-baseline``); 0 = the guided map alone.
        map_student: where the bundle carries a map student distilled at this very setting (its S, N,
            guidance, map kind, saliency weight, and this K), decode with the student's few steps and
            let one student pass correct the map (``pancdiff.map_student``); where the bundle also
            carries a lesion head trained there, average its calibrated probability into the heatmap
            (``pancdiff.lesion_head``); anywhere else, and when False, the K-step decode alone.
    """

    scale: float = 7.0
    noise_level: int = 300
    steps: int = 10
    threshold: float = 0.35
    smooth_sigma_px: float = 1.0
    peak_sigma_px: float | None = None
    normalization: str = "slice"
    map_scale: float = 0.0
    batch_size: int | None = None
    device: str = "auto"
    edge_mm: float = 3.0
    min_anomaly: float = 0.05
    pancreas_margin_mm: float = 5.0
    guidance: str = "noisy"
    map_kind: str = "input"
    solver: str = "ddim"
    grid_power: float = 1.0
    guidance_step: str = "paper"
    saliency_weight: float = 0.0
    map_student: bool = False

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise InputError(f"guidance scale must be >= 0, got {self.scale}")
        if not 1 <= self.noise_level <= 999:
            raise InputError(f"noise level must be in 1..999, got {self.noise_level}")
        if not 1 <= self.steps <= self.noise_level:
            raise InputError(f"steps must be in 1..noise level ({self.noise_level}), got {self.steps}")
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold must be a fraction in (0, 1), got {self.threshold}")
        for name in ("smooth_sigma_px", "peak_sigma_px"):
            sigma = getattr(self, name)
            if sigma is not None and not 0.0 <= sigma <= 20.0:
                raise InputError(f"{name} must be in 0..20 canvas pixels, got {sigma}")
        if self.normalization not in ("slice", "calibrated"):
            raise InputError(f"normalization must be slice or calibrated, got {self.normalization!r}")
        if self.normalization == "calibrated" and not self.map_scale > 0:
            raise InputError("calibrated normalization needs the model's map_scale > 0 (see its model card)")
        if self.guidance not in ("noisy", "x0"):
            raise InputError(f"guidance must be noisy or x0, got {self.guidance!r}")
        if self.solver not in ("ddim", "dpm2m"):
            raise InputError(f"solver must be ddim or dpm2m, got {self.solver!r}")
        if not GRID_POWERS[0] <= self.grid_power <= GRID_POWERS[1]:
            raise InputError(f"grid power must be in [{GRID_POWERS[0]:g}, {GRID_POWERS[1]:g}], got {self.grid_power}")
        if self.guidance_step not in GUIDANCE_STEPS:
            raise InputError(f"guidance step must be one of {', '.join(GUIDANCE_STEPS)}, got {self.guidance_step!r}")
        if self.map_kind not in MAP_KINDS:
            raise InputError(f"map kind must be one of {', '.join(MAP_KINDS)}, got {self.map_kind!r}")
        if not self.saliency_weight >= 0.0:
            raise InputError(f"saliency weight must be >= 0, got {self.saliency_weight}")
        if not 0.0 <= self.edge_mm <= 20.0:
            raise InputError(f"edge_mm must be in 0..20 mm, got {self.edge_mm}")
        if not 0.0 <= self.min_anomaly < 1.0:
            raise InputError(f"min_anomaly must be in [0, 1), got {self.min_anomaly}")
        if not 0.0 <= self.pancreas_margin_mm <= 50.0:
            raise InputError(f"pancreas margin must be in 0..50 mm, got {self.pancreas_margin_mm}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.device not in ("auto", "cuda", "mps", "cpu") and not self.device.startswith("cuda:"):
            raise InputError(f"device must be auto, cuda, mps or cpu, got {self.device!r}")

    @property
    def peak_sigma(self) -> float:
        """The smoothing the peak is found at (``peak_sigma_px``, else the map's)."""
        return self.smooth_sigma_px if self.peak_sigma_px is None else self.peak_sigma_px

    def paper_exact(self) -> DetectConfig:
        """The reference run for this setting: K = N even steps, DDIM, Algorithm 1's guidance weight."""
        return dataclasses.replace(
            self, steps=self.noise_level, solver="ddim", grid_power=1.0, guidance_step="paper", map_student=False
        )  # fmt: skip

    def at(self, noise_level: int, steps: int | None = None) -> DetectConfig:
        """This setting at noise level N with K steps; by default K keeps this setting's step size,
        ceil(K N / N_self), at most N (fidelity to the paper-exact run was measured per step size, and
        a fixed K takes coarser steps at a larger N). K = N is the paper-exact run, whatever grid and
        guidance weight the fast setting uses to approach it with fewer steps."""
        if steps is None:
            steps = min(noise_level, math.ceil(self.steps * noise_level / self.noise_level))
        cfg = dataclasses.replace(self, noise_level=noise_level, steps=steps)
        return cfg.paper_exact() if steps == noise_level else cfg


def to_dict(cfg: Any) -> dict:
    """A dataclass as JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a config dataclass from ``to_dict`` output, ignoring unknown keys."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


__all__ = [
    "ScheduleConfig",
    "NetworkConfig",
    "PreprocessConfig",
    "DetectConfig",
    "MAP_KINDS",
    "needs_unguided",
    "to_dict",
    "from_dict",
]
