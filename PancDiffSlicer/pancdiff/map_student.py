"""The map student: one small network pass that turns a coarse (K = 2) guided map into what the fine
decode gives, so the default run follows the paper-exact one with 20x fewer passes
(``model_runs/20261129-map-student``: r 0.964 at 9 passes, where plain K = 2 reaches 0.936).

It stands in for the decode only where it was distilled: the same S, N, guidance, map kind and
saliency weight, and the operating point's own K (``student_fits``). Anywhere else (another S on the
slider, another N, the paper-exact run) the detector decodes with K steps as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from .config import DetectConfig

CHANNELS = ("x", "saliency", "zone", "map")


@dataclass(frozen=True)
class StudentConfig:
    """What a student sees, its network, and the one setting it was distilled at.

    Attributes:
        inputs: its input channels, a subset of ``CHANNELS`` in order: the crop, w |grad_x log p(healthy|x,0)|,
            the pancreas zone, the K-step guided map (with it, the student predicts a correction to that map).
        channels, num_res_units: the MONAI UNet (strides 2).
        steps: the K of the guided map it corrects (the decode it replaces costs ``replaces_steps``).
        replaces_steps: the operating point's K, which a run must ask for to get the student.
        scale, noise_level, guidance, map_kind, saliency_weight: the setting it was distilled at.
        unit: the map scale its maps are measured in (the distilling bundle's ``map_scale``).
        teacher_steps: the K of the maps it learned from.
    """

    inputs: tuple[str, ...] = CHANNELS
    channels: tuple[int, ...] = (16, 32, 64)
    num_res_units: int = 1
    steps: int = 2
    replaces_steps: int = 4
    scale: float = 5.0
    noise_level: int = 50
    guidance: str = "noisy"
    map_kind: str = "guidance"
    saliency_weight: float = 0.0
    unit: float = 1.0
    teacher_steps: int = 10

    def __post_init__(self) -> None:
        unknown = [c for c in self.inputs if c not in CHANNELS]
        if unknown or not self.inputs:
            raise ValueError(f"student inputs must be among {CHANNELS}, got {self.inputs}")
        if "saliency" in self.inputs and not self.saliency_weight > 0:
            raise ValueError("a student that reads the saliency needs the saliency weight it was distilled with")
        if not self.unit > 0:
            raise ValueError(f"student map unit must be > 0, got {self.unit}")


def build_student(cfg: StudentConfig) -> torch.nn.Module:
    """The student network (64 px canvases go down to 16 px)."""
    return UNet(
        spatial_dims=2,
        in_channels=len(cfg.inputs),
        out_channels=1,
        channels=cfg.channels,
        strides=(2,) * (len(cfg.channels) - 1),
        num_res_units=cfg.num_res_units,
    )


def student_fits(student: StudentConfig | None, cfg: DetectConfig) -> bool:
    """Whether ``cfg`` asks for the run the student was distilled for (``DetectConfig.map_student``)."""
    if student is None or not cfg.map_student:
        return False
    return (
        cfg.steps == student.replaces_steps
        and cfg.noise_level == student.noise_level
        and np.isclose(cfg.scale, student.scale)
        and cfg.guidance == student.guidance
        and cfg.map_kind == student.map_kind
        and np.isclose(cfg.saliency_weight, student.saliency_weight)
    )


def student_setting(student: StudentConfig, cfg: DetectConfig) -> DetectConfig:
    """The K-step decode the student corrects, in place of ``cfg``'s."""
    return dataclasses.replace(cfg, steps=student.steps)


def student_features(cfg: StudentConfig, arrays: dict) -> np.ndarray:
    """(B, C, S, S) float32 inputs from {"x", "valid", "saliency", "zone", "map"} (B, S, S): maps and
    weighted saliency in units of ``cfg.unit``, everything 0 outside the support."""
    valid = arrays["valid"]
    chans = {
        "x": lambda: arrays["x"] * valid,
        "saliency": lambda: cfg.saliency_weight * arrays["saliency"] * valid / cfg.unit,
        "zone": lambda: np.asarray(arrays["zone"], np.float32),
        "map": lambda: arrays["map"] * valid / cfg.unit,
    }
    return np.stack([chans[c]() for c in cfg.inputs], axis=1).astype(np.float32)


def student_predict(net: torch.nn.Module, cfg: StudentConfig, feats: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) map in ``cfg.unit``, >= 0: a correction added to the coarse map when the student
    reads it, else the map itself."""
    out = net(feats)
    if "map" in cfg.inputs:
        return F.relu(feats[:, cfg.inputs.index("map")][:, None] + out)
    return F.softplus(out)


def run_batched(net: torch.nn.Module, fn, feats: np.ndarray, batch: int = 256) -> np.ndarray:
    """(B, S, S) ``fn`` of ``feats`` (B, C, S, S) in batches on ``net``'s device, without gradients: one pass
    of a learned part (the student, the lesion head) per canvas."""
    device = next(net.parameters()).device
    t = torch.from_numpy(feats)
    with torch.no_grad():
        out = torch.cat([fn(t[i : i + batch].to(device)).cpu() for i in range(0, len(t), batch)])
    return out[:, 0].numpy()


def student_map(net: torch.nn.Module, cfg: StudentConfig, arrays: dict, batch: int = 256) -> np.ndarray:
    """(B, S, S) raw map (the guided map's units), 0 outside the support; one student pass per canvas."""
    out = run_batched(net, lambda f: student_predict(net, cfg, f), student_features(cfg, arrays), batch)
    return (out * cfg.unit * arrays["valid"]).astype(np.float32)
