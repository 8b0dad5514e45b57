"""The command-line contract with the ``pancdiff`` engine, seen from the Slicer side.

This is the one module where names change case: the engine speaks snake_case (command-line
options, JSON progress keys, ``slices.csv`` columns, ``summary.json`` keys) and the Slicer layer
speaks camelCase. Everything the module sends to or reads from the child process goes through here,
so a change in the engine's contract is a change in this file only.

Pure Python: no ``slicer``, no Qt, no engine import (the engine runs in the child process).
"""

from __future__ import annotations

import csv
import enum
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

HEATMAP_FILE = "heatmap.nii.gz"
CANDIDATES_FILE = "candidates.nii.gz"
SLICES_FILE = "slices.csv"
SUMMARY_FILE = "summary.json"

FAST_STEPS = 4
FAST_NOISE = 50
"""The bundled model's K at its N (its card): "fast" keeps that step size at any N
(K = ceil(FAST_STEPS N / FAST_NOISE), as the engine does when only N is given); "paper-exact" uses K = N.
At exactly the card's S and N, on a CT inside its input domain, the engine's map student stands in for
these K steps (2 steps and one student pass; ``pancdiff.map_student``), and its lesion head, trained on
simulated lesions, is averaged into the heatmap (one more pass; ``pancdiff.lesion_head``)."""


class PancreasSource(enum.Enum):
    """Where the pancreas mask comes from."""

    TOTALSEGMENTATOR_FAST = "totalSegmentatorFast"
    TOTALSEGMENTATOR_FULL = "totalSegmentatorFull"
    SEGMENTATION = "segmentation"
    LABELMAP = "labelmap"

    def label(self) -> str:
        return {
            PancreasSource.TOTALSEGMENTATOR_FAST: "TotalSegmentator (fast, 3 mm)",
            PancreasSource.TOTALSEGMENTATOR_FULL: "TotalSegmentator (full, 1.5 mm)",
            PancreasSource.SEGMENTATION: "Existing segmentation",
            PancreasSource.LABELMAP: "Label map volume",
        }[self]

    @property
    def usesTotalSegmentator(self) -> bool:
        return self in (PancreasSource.TOTALSEGMENTATOR_FAST, PancreasSource.TOTALSEGMENTATOR_FULL)


class Device(enum.Enum):
    """Where inference runs; "auto" lets the engine pick (CUDA, then Apple MPS, then CPU)."""

    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"

    def label(self) -> str:
        return {Device.AUTO: "Auto (GPU if present)", Device.GPU: "GPU", Device.CPU: "CPU"}[self]


class Quality(enum.Enum):
    """Fast uses a coarse DDIM step grid; paper-exact takes one step per noise level (K = N)."""

    FAST = "fast"
    PAPER_EXACT = "paperExact"

    def label(self) -> str:
        return {
            Quality.FAST: f"Fast ({FAST_STEPS} steps per {FAST_NOISE} noise levels; map student and lesion head at "
            "the defaults)",
            Quality.PAPER_EXACT: "Paper-exact (K = N steps)",
        }[self]


@dataclass(frozen=True)
class DetectionSettings:
    """What one run of ``pancdiff detect`` needs, validated once here (the module's edge).

    Attributes:
        guidanceScale: classifier guidance scale S, 0..20.
        noiseLevel: noise level N on the 1000-step scale, 10..600.
        threshold: fraction of the normalized map that becomes a candidate, 0.05..0.95.
        quality: step grid (fast or paper-exact).
        device: auto, GPU or CPU.
        pancreasSource: TotalSegmentator fast/full, or a mask given by the user.
        batchSize: slices per batch; 0 lets the engine choose from the free memory.
    """

    guidanceScale: float = 5.0  # defaults: the bundled model's operating point (test_slicer_static checks it)
    noiseLevel: int = 50
    threshold: float = 0.65
    quality: Quality = Quality.FAST
    device: Device = Device.AUTO
    pancreasSource: PancreasSource = PancreasSource.TOTALSEGMENTATOR_FAST
    batchSize: int = 0

    def __post_init__(self) -> None:
        if self.batchSize < 0:
            raise ValueError(f"Batch size must be >= 0 (0 = automatic), got {self.batchSize}")
        if not 0.0 <= self.guidanceScale <= 20.0:
            raise ValueError(f"Guidance scale must be in 0..20, got {self.guidanceScale}")
        if not 10 <= self.noiseLevel <= 600:
            raise ValueError(f"Noise level must be in 10..600, got {self.noiseLevel}")
        if not 0.05 <= self.threshold <= 0.95:
            raise ValueError(f"Threshold must be in 5..95 %, got {self.threshold * 100:.0f} %")

    @property
    def steps(self) -> int:
        if self.quality == Quality.PAPER_EXACT:
            return self.noiseLevel
        return min(self.noiseLevel, math.ceil(FAST_STEPS * self.noiseLevel / FAST_NOISE))

    def rerunKey(self) -> str:
        """Identifies the settings that change the maps (threshold does not: it is display only)."""
        return f"S={self.guidanceScale:g};N={self.noiseLevel};K={self.steps};mask={self.pancreasSource.value}"


def engineDevice(device: Device, platform: str = sys.platform) -> str:
    """The engine's ``--device`` value: a GPU is CUDA, except on macOS where it is Apple MPS."""
    if device == Device.GPU:
        return "mps" if platform == "darwin" else "cuda"
    return device.value


def detectCommandLine(
    pythonExecutable: str,
    ctPath: str | Path,
    outputDir: str | Path,
    settings: DetectionSettings,
    maskPath: str | Path | None = None,
    platform: str = sys.platform,
    encodingCacheDir: str | Path | None = None,
) -> list[str]:
    """The child process's argument list for ``python -m pancdiff detect``.

    Without ``maskPath`` the engine segments the pancreas with TotalSegmentator. With
    ``encodingCacheDir`` the engine keeps its DDIM encodings there, so a rerun that changes only S
    (or the threshold) skips the encoding.
    """
    command = [pythonExecutable, "-m", "pancdiff", "detect", str(ctPath)]
    if maskPath is not None:
        command += ["--pancreas-mask", str(maskPath)]
    elif settings.pancreasSource == PancreasSource.TOTALSEGMENTATOR_FULL:
        command += ["--totalseg-full"]  # without it the engine runs TotalSegmentator's fast model
    command += [
        "--out", str(outputDir),
        "--scale", f"{settings.guidanceScale:g}",
        "--noise", str(int(settings.noiseLevel)),
        "--steps", str(settings.steps),
        "--threshold", f"{settings.threshold:g}",
        "--device", engineDevice(settings.device, platform),
        "--progress", "json",
    ]  # fmt: skip
    if settings.batchSize > 0:
        command += ["--batch-size", str(settings.batchSize)]
    if encodingCacheDir is not None:
        command += ["--encoding-cache", str(encodingCacheDir)]
    return command


def pancreasCommandLine(
    pythonExecutable: str,
    ctPath: str | Path,
    maskPath: str | Path,
    settings: DetectionSettings,
    platform: str = sys.platform,
) -> list[str]:
    """``python -m pancdiff pancreas``: TotalSegmentator's pancreas on the CT's grid, written to ``maskPath``.

    TotalSegmentator's convolutions fail on Apple MPS, so it never gets ``mps``: on macOS a GPU or
    Auto choice runs it on the CPU (the detection itself may still use MPS).
    """
    device = engineDevice(settings.device, platform)
    if device == "mps" or (device == "auto" and platform == "darwin"):
        device = "cpu"
    command = [pythonExecutable, "-m", "pancdiff", "pancreas", str(ctPath), "--out", str(maskPath)]
    if settings.pancreasSource == PancreasSource.TOTALSEGMENTATOR_FULL:
        command += ["--totalseg-full"]
    return [*command, "--device", device, "--progress", "json"]


@dataclass
class ProcessEvent:
    """One line of the child's output, parsed.

    ``kind`` is the engine's event name ("stage", "progress", "info", "error", "done") or "log" for
    a line that is not a JSON event (stderr, warnings, a traceback).
    """

    kind: str
    stage: str = ""
    message: str = ""
    done: int = 0
    total: int = 0
    elapsedSeconds: float = 0.0
    etaSeconds: float | None = None
    exitCode: int | None = None
    payload: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.kind == "progress" and self.total > 0 else None


def parseEventLine(line: str) -> ProcessEvent:
    """A progress event from one output line; anything that is not a JSON event is a "log" line."""
    text = line.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("event"), str):
            eta = data.get("eta_s")
            exitCode = data.get("exit_code")
            return ProcessEvent(
                kind=data["event"],
                stage=str(data.get("stage", "")),
                message=str(data.get("message", "")),
                done=int(data.get("done", 0) or 0),
                total=int(data.get("total", 0) or 0),
                elapsedSeconds=float(data.get("elapsed_s", 0.0) or 0.0),
                etaSeconds=None if eta is None else float(eta),
                exitCode=None if exitCode is None else int(exitCode),
                payload=data,
            )
    return ProcessEvent(kind="log", message=line.rstrip("\r\n"))


@dataclass(frozen=True)
class SliceRow:
    """One row of ``slices.csv``; ``peakRas`` is the map's peak in the slice (RAS, mm)."""

    sliceIndex: int
    tumorProbability: float
    mapMax: float
    peakIjk: tuple[int, int, int] | None
    peakRas: tuple[float, float, float] | None


def _floatOrNan(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _triple(record: dict, names: tuple[str, str, str], kind: type = float) -> tuple | None:
    values = [record.get(name) for name in names]
    if any(value in (None, "") for value in values):
        return None
    return tuple(kind(float(value)) for value in values)


def _lpsToRas(point: tuple | list | None) -> tuple[float, float, float] | None:
    if point is None:
        return None
    x, y, z = point
    return -float(x), -float(y), float(z)


def readSliceRows(path: str | Path) -> list[SliceRow]:
    """Rows of ``slices.csv``, parsed by column name (the column set may grow).

    The peak position is read from RAS columns where present, else from LPS ones (ITK's physical
    space: ``peak_lps_*_mm`` or ``peak_x/y/z``), which are converted to RAS.
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            peakRas = _triple(record, ("peak_ras_x_mm", "peak_ras_y_mm", "peak_ras_z_mm"))
            if peakRas is None:
                lps = _triple(record, ("peak_lps_x_mm", "peak_lps_y_mm", "peak_lps_z_mm")) or _triple(
                    record, ("peak_x", "peak_y", "peak_z")
                )
                peakRas = _lpsToRas(lps)
            rows.append(
                SliceRow(
                    sliceIndex=int(float(record["slice_index"])),
                    tumorProbability=_floatOrNan(record.get("tumor_probability")),
                    mapMax=_floatOrNan(record.get("map_max")),
                    peakIjk=_triple(record, ("peak_i", "peak_j", "peak_k"), int),
                    peakRas=peakRas,
                )
            )
    return rows


@dataclass(frozen=True)
class Peak:
    """One of the engine's ranked peaks (``summary.json`` "peaks", strongest first)."""

    rank: int
    sliceIndex: int | None
    peakIjk: tuple[int, int, int] | None
    peakRas: tuple[float, float, float] | None
    tumorProbability: float
    mapMax: float


@dataclass(frozen=True)
class Summary:
    """What the module shows from ``summary.json``; ``raw`` keeps the whole file."""

    confidence: float
    modelId: str
    peaksRas: list[tuple[float, float, float]]
    raw: dict
    peaks: list[Peak] = field(default_factory=list)
    untrained: bool = False


def _peakRas(peak: dict) -> tuple[float, float, float] | None:
    for key in ("peak_ras_mm", "position_ras"):
        if peak.get(key) is not None:
            r, a, s = peak[key]
            return float(r), float(a), float(s)
    for key in ("peak_lps_mm", "position_lps"):
        if peak.get(key) is not None:
            return _lpsToRas(peak[key])
    return None


def _peak(rank: int, record: dict) -> Peak:
    ijk = record.get("peak_voxel_ijk")
    sliceIndex = record.get("slice_index")
    return Peak(
        rank=int(record.get("rank", rank)),
        sliceIndex=None if sliceIndex is None else int(sliceIndex),
        peakIjk=None if ijk is None else (int(ijk[0]), int(ijk[1]), int(ijk[2])),
        peakRas=_peakRas(record),
        tumorProbability=_floatOrNan(record.get("tumor_probability")),
        mapMax=_floatOrNan(record.get("map_max", record.get("value"))),
    )


def summaryFromDict(raw: dict) -> Summary:
    records = [peak for peak in raw.get("peaks", []) if isinstance(peak, dict)]
    peaks = [_peak(rank, record) for rank, record in enumerate(records, start=1)]
    peaks = sorted((p for p in peaks if p.peakRas is not None or p.peakIjk is not None), key=lambda p: p.rank)
    confidence = raw.get("overall_confidence", raw.get("confidence"))
    model = raw.get("model") or {}
    return Summary(
        confidence=math.nan if confidence is None else float(confidence),
        modelId=str(raw.get("model_id") or model.get("model_id") or ""),
        peaksRas=[p.peakRas for p in peaks if p.peakRas is not None],
        raw=raw,
        peaks=peaks,
        untrained=bool(model.get("untrained", False)),
    )


def readSummary(path: str | Path) -> Summary:
    return summaryFromDict(json.loads(Path(path).read_text(encoding="utf-8")))


# -- the model card: what the confidence is worth ----------------------------------------------

MODEL_CARD_FILE = "model.json"


def readModelCard(engineDir: str | Path) -> dict:
    """The bundled model card shipped beside the engine ({} where there is none)."""
    path = Path(engineDir) / "Resources" / "Models" / MODEL_CARD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def confidenceText(summary: Summary, card: dict) -> str:
    """The overall confidence with what it is: the model, its held-out figures, whether it is calibrated.

    The figures are quoted only when the result was made by the model the card describes.
    """
    if math.isnan(summary.confidence):
        return "No pancreas slice was analyzed."
    text = f"Tumor probability: {100 * summary.confidence:.0f} %"
    if summary.untrained:
        return text + " (UNTRAINED random weights: meaningless, a pipeline test only)"
    calibration = card.get("confidence_calibration") if card.get("model_id") == summary.modelId else None
    ece = ((calibration or {}).get("test") or {}).get("ece_calibrated")
    if not calibration:
        text += " (uncalibrated)"
    elif ece is not None:
        text += f" (calibrated on validation slices, held-out calibration error {ece:.2f}"
        text += "; for its data's tumor/healthy mix)"
    domainWarning = (summary.raw.get("input_domain") or {}).get("warning")
    if domainWarning:
        text += f"\nWARNING: {domainWarning}."
    text += f"\nModel {summary.modelId or 'unknown'}"
    validation = card.get("validation") or {}
    classifier = validation.get("classifier") or {}
    if card.get("model_id") == summary.modelId and classifier.get("auroc") is not None:
        where = "held-out cases"
        if validation.get("slices") and validation.get("cases"):
            where = f"{validation['slices']} held-out slices of {validation['cases']} cases"
        text += f": slice AUROC {classifier['auroc']:.2f} on {where}"
        text += heatmapFigures(validation.get("localization") or {})
    else:
        text += ": no validation figures for this model"
    return text + ". Research only, not for diagnosis."


def heatmapFigures(localization: dict) -> str:
    """What the heatmap found on the card's held-out cases, per lesion set, beside chance, with the
    range its patients give where the card has one: a reader should know that a confident-looking map
    may be at chance on some tumors, and that a handful of patients makes any figure uncertain."""
    parts = []
    for name, label in (("simulated", "simulated dark lesions"), ("real", "real MSD tumors")):
        entry = localization.get(name) or {}
        found = entry.get("pancdiff") or {}
        chance = (entry.get("trivial") or {}).get("peak_in_tumor_chance")
        if found.get("dice") is None:
            continue
        part = f"{label} Dice {found['dice']:.2f}"
        interval = found.get("dice_ci")
        if interval and found.get("n_cases"):
            part += f" ({interval[0]:.2f}-{interval[1]:.2f} over {found['n_cases']} patients)"
        if found.get("peak_in_tumor") is not None and chance is not None:
            part += f", peak inside {100 * found['peak_in_tumor']:.0f} % (chance {100 * chance:.0f} %)"
        parts.append(part)
    return "\nHeatmap on the same cases: " + "; ".join(parts) if parts else ""


def writeTabularOutputs(outputDir: str | Path, confidence: float, sliceRows: list[SliceRow]) -> None:
    """Write ``slices.csv`` and ``summary.json`` as the engine does (self-tests and demos without a model)."""
    outputDir = Path(outputDir)
    with open(outputDir / SLICES_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["slice_index", "tumor_probability", "map_max", "peak_ras_x_mm", "peak_ras_y_mm", "peak_ras_z_mm"]
        )
        for row in sliceRows:
            writer.writerow([row.sliceIndex, row.tumorProbability, row.mapMax, *(row.peakRas or ("", "", ""))])
    summary = {"overall_confidence": confidence, "settings": {}, "model_id": "none", "peaks": []}
    (outputDir / SUMMARY_FILE).write_text(json.dumps(summary), encoding="utf-8")
