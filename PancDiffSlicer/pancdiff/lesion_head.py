"""The lesion head: a small network trained to outline *simulated* lesions from the evidence the guided
map is built from (the crop, the classifier's saliency, the zone, the K = 2 guided map). Its probability
and the guided map, each divided by its own healthy calibration, are averaged into the heatmap
(``model_runs/20261130-lesion-head``: tuning objective 0.543 against 0.475, real-tumor Dice 0.495
against 0.457). It never saw a real tumor outline; real outlines only judged it.

Like the map student it reads one setting's maps, so it stands in only there (``head_fits``). Anywhere
else (another S or N, the paper-exact run, a CT outside the card's input domain) the heatmap is the
guided map alone, put in the same units by ``fallback_gain`` so the operating point's threshold keeps
its meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import DetectConfig
from .map_student import StudentConfig, run_batched, student_features, student_fits


@dataclass(frozen=True)
class LesionHeadConfig(StudentConfig):
    """The student's inputs, network and setting (its fields; ``teacher_steps`` unused), and how the head's
    output is combined. ``inputs``' "map" is the K-step guided map before any student correction.

    Attributes:
        guided_unit, head_unit: the healthy calibrations (0.995 quantile in the tuning healthy zone, 1 px)
            of the guided map (with the saliency) and of the head's probability; the heatmap is the mean
            of the two, each divided by its own.
        fallback_gain: where the head does not run, the guided map / ``guided_unit`` times this is the
            heatmap, in the combined map's units (measured by the release on the tuning healthy slices).
    """

    teacher_steps: int = 0
    guided_unit: float = 1.0
    head_unit: float = 1.0
    fallback_gain: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("guided_unit", "head_unit", "fallback_gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"lesion head {name} must be > 0, got {getattr(self, name)}")


def head_fits(head: LesionHeadConfig | None, student: StudentConfig | None, cfg: DetectConfig) -> bool:
    """Whether the head runs under ``cfg``: the map student runs (the head's guided half is the student's
    corrected map) and the head was trained at that same setting from the same K."""
    if head is None or not student_fits(student, cfg):
        return False
    return student_fits(head, cfg) and head.steps == student.steps


def head_probability(net: torch.nn.Module, cfg: LesionHeadConfig, arrays: dict, batch: int = 256) -> np.ndarray:
    """(B, S, S) lesion probability, 0 outside the support; ``arrays`` as ``student_features`` reads them."""
    probability = run_batched(net, lambda f: torch.sigmoid(net(f)), student_features(cfg, arrays), batch)
    return (probability * arrays["valid"]).astype(np.float32)


def combined_map(guided: np.ndarray, probability: np.ndarray, cfg: LesionHeadConfig) -> np.ndarray:
    """The heatmap where the head runs: mean of the two calibrated maps."""
    return ((guided / cfg.guided_unit + probability / cfg.head_unit) / 2).astype(np.float32)


def fallback_map(guided: np.ndarray, cfg: LesionHeadConfig) -> np.ndarray:
    """The heatmap where the head does not run: the guided map alone, in the combined map's units."""
    return (guided / cfg.guided_unit * cfg.fallback_gain).astype(np.float32)
