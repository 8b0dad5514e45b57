"""The slice-folder format: ``manifest.csv`` (file, case, tumor[, mask][, labels]) beside PNG/NPY images.

``../shared/data/pancreas-tc`` is in this format: crops of the pancreas bounding box at native
in-plane resolution (about 0.6-0.9 mm; not recorded per image, so ``assumed_spacing_mm`` stands in).
``mask`` is a binary tumor mask; ``labels`` a label map (0 background, 1 pancreas, 2 tumor). The
organ (``labels > 0``) places simulated lesions and removes surroundings; tumor outlines are only
ever used to score, never to train the classifier.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..canvas import window_hu
from ..errors import InputError

STORED_WINDOW_HU = (-150.0, 250.0)
"""The HU window slice-folder intensities encode (pancreas-tc's PNGs: -150 HU -> 0, 250 HU -> 1)."""


@dataclass(frozen=True)
class SliceRecord:
    """One labelled 2D slice. ``mask`` / ``labels``: paths to a tumor mask / label map, or None."""

    path: Path
    case: str
    tumor: int
    mask: Path | None = None
    source: str = ""
    labels: Path | None = None


def read_manifest(root: str | Path) -> list[SliceRecord]:
    """Records of a slice folder; paths resolved against ``root``."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise InputError(f"{root}: no manifest.csv (columns file, case, tumor[, mask]); is this a slice folder?")
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "case", "tumor"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
        records = []
        for row in reader:
            if row["tumor"] not in ("0", "1"):
                raise InputError(f"{manifest}: tumor must be 0 or 1, got {row['tumor']!r} for {row['file']}")
            mask = row.get("mask") or None
            labels = row.get("labels") or None
            records.append(
                SliceRecord(
                    path=root / row["file"],
                    case=row["case"],
                    tumor=int(row["tumor"]),
                    mask=root / mask if mask else None,
                    source=row.get("source", ""),
                    labels=root / labels if labels else None,
                )
            )
    if not records:
        raise InputError(f"{manifest}: no rows")
    return records


def _read_array(path: Path, what: str, missing: str) -> np.ndarray:
    """The raw array of a PNG (as stored) or an NPY; a missing or unreadable file is an InputError."""
    if not path.is_file():
        raise InputError(f"{path}: {missing} not found")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with Image.open(path) as img:
            return np.asarray(img)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable {what} ({exc})") from None


def load_slice_image(path: str | Path, hu_window: tuple[float, float] = STORED_WINDOW_HU) -> np.ndarray:
    """(H, W) float32 in [0, 1] from a grey / RGB / RGBA-with-equal-channels PNG, or an NPY.

    ``hu_window`` other than ``STORED_WINDOW_HU`` re-windows the stored intensities (a narrower
    window only rescales and clips: an 8-bit PNG keeps its 1.6 HU steps).
    """
    path = Path(path)
    arr = _read_array(path, "image", missing="file")
    if path.suffix.lower() == ".npy":
        arr = arr.astype(np.float32)
    else:
        arr = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    if arr.ndim == 3:
        colour = arr[..., :3]
        if np.abs(colour - colour[..., :1]).max() > 1e-3:
            raise InputError(f"{path}: colour image; expected grey CT intensities (R = G = B)")
        arr = colour[..., 0]
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2D slice, got shape {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
        raise InputError(f"{path}: intensities must be finite and in [0, 1]")
    return rewindow(arr, STORED_WINDOW_HU, hu_window)


def rewindow(x: np.ndarray, stored: tuple[float, float], wanted: tuple[float, float]) -> np.ndarray:
    """Intensities in [0, 1] of window ``stored`` (HU) mapped to window ``wanted``, clipped."""
    if tuple(map(float, stored)) == tuple(map(float, wanted)):
        return x
    return window_hu(stored[0] + x * (stored[1] - stored[0]), wanted).astype(np.float32)


def load_label_map(path: str | Path) -> np.ndarray:
    """(H, W) uint8 label map (0 background, 1 pancreas, 2 tumor) from a PNG/NPY of small integers."""
    path = Path(path)
    arr = _read_array(path, "label map", missing="label map")
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2 or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 2:
        raise InputError(f"{path}: a label map holds 0 (background), 1 (pancreas) and 2 (tumor) only")
    return arr.astype(np.uint8)


def tuning_test_halves(cases: list[str]) -> tuple[list[str], list[str]]:
    """Deterministic split of validation cases into a tuning half (every choice is made there) and a
    test half (touched once, at the end), alternating within each source prefix."""
    tune, test = [], []
    for prefix in sorted({c.split("_")[0] for c in cases}):
        group = sorted(c for c in cases if c.split("_")[0] == prefix)
        tune += group[0::2]
        test += group[1::2]
    return tune, test


def split_cases(records: list[SliceRecord], val_fraction: float = 0.15, seed: int = 0) -> tuple[list[str], list[str]]:
    """Patient-level split, stratified by patient label (any tumor slice) so both classes are in
    validation. An MSD Task07 tumor patient also has slices without tumor; all stay on one side."""
    rng = random.Random(seed)
    tumor_patient: dict[str, int] = {}
    for rec in records:
        tumor_patient[rec.case] = max(tumor_patient.get(rec.case, 0), int(rec.tumor))
    by_label: dict[int, set[str]] = {}
    for case, label in tumor_patient.items():
        by_label.setdefault(label, set()).add(case)
    train, val = [], []
    for label in sorted(by_label):
        cases = sorted(by_label[label])
        rng.shuffle(cases)
        n_val = max(1, round(len(cases) * val_fraction))
        val += cases[:n_val]
        train += cases[n_val:]
    return sorted(train), sorted(val)
