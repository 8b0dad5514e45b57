"""Medical Segmentation Decathlon Task07 (pancreas): volumes + labels -> labelled slice canvases.

Layout: ``imagesTr/*.nii.gz``, ``labelsTr/*.nii.gz`` (0 background, 1 pancreas, 2 tumor) and
``dataset.json``. Each slice with pancreas becomes canvases through ``preprocess.extract_slices``,
the very function inference uses, so training sees exactly what detection will see. A canvas is
*tumor* when tumor (label 2) is in its view, *healthy* otherwise; the tumor mask goes onto the same
canvas by the same transform.

The paper's optional filter drops slices where the tumor barely differs from the pancreas around
it: ``|mean(tumor) - mean(pancreas)| < 0.1`` in window units ([0, 1] over the HU window), measured
over the whole slice. A slice with tumor but no label-1 pancreas to compare with is dropped too,
since its contrast cannot be checked.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..canvas import window_hu
from ..config import PreprocessConfig
from ..ctio import read_ct
from ..errors import InputError
from ..outputs import OutputDir
from ..pancreas import read_labels
from ..preprocess import Reorientation, extract_slices, to_canvases
from .slice_folder import SliceRecord

PANCREAS, TUMOR = 1, 2
PAPER_MIN_DEVIATION = 0.1


@dataclass(frozen=True)
class MSDCase:
    """One training case: its id (file name without .nii.gz), CT and label paths."""

    case: str
    image: Path
    label: Path


@dataclass(frozen=True, eq=False)
class LabelledCanvas:
    """One model input with its weak label and, where known, the tumor's pixels.

    Attributes:
        canvas: (S, S) float32 in [0, 1].
        valid: (S, S) bool, the support.
        tumor: 1 if tumor is in view, else 0.
        mask: (S, S) bool tumor pixels (all False for healthy canvases).
        case: patient id, for splitting by patient.
        slice_index: index along the CT's axial array axis, or -1 when unknown.
        name: unique file stem when written to a slice folder.
        source: where it came from ("MSD_Task07", "simulated", ...).
        organ: (S, S) bool pancreas (labels 1 and 2) on the canvas, or None where unknown.
    """

    canvas: np.ndarray
    valid: np.ndarray
    tumor: int
    mask: np.ndarray
    case: str
    slice_index: int = -1
    name: str = ""
    source: str = ""
    organ: np.ndarray | None = None


def list_msd_cases(root: str | Path) -> list[MSDCase]:
    """Training cases of an MSD Task07 folder, from ``dataset.json`` (or ``imagesTr/`` if it has none)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: MSD folder not found")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InputError(f"{root}: not an MSD Task07 folder (needs imagesTr/, labelsTr/ and dataset.json)")
    entries: list[tuple[Path, Path]] = []
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            entries = [(root / item["image"], root / item["label"]) for item in meta.get("training", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(
                f"{meta_file}: unreadable (expects JSON with 'training': [{{'image': ..., 'label': ...}}])"
            ) from None
    if not entries:
        for image in sorted(images_dir.glob("*.nii.gz")):
            if not image.name.startswith("._"):  # macOS resource forks in the original tar
                entries.append((image, labels_dir / image.name))
    cases = []
    for image, label in entries:
        for path in (image, label):
            if not path.is_file():
                raise InputError(f"{path}: listed in {root} but missing; re-extract the dataset")
        cases.append(MSDCase(image.name.removesuffix(".nii.gz"), image.resolve(), label.resolve()))
    if not cases:
        raise InputError(f"{root}: no training cases in imagesTr/")
    return cases


def split_msd_cases(cases: Sequence[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split by patient (90/10 by default): no patient's slices on both sides."""
    unique = sorted(set(cases))
    random.Random(seed).shuffle(unique)
    n_val = max(1, round(len(unique) * val_fraction)) if len(unique) > 1 else 0
    return sorted(unique[n_val:]), sorted(unique[:n_val])


def load_msd_slices(
    root: str | Path,
    cfg: PreprocessConfig,
    cases: Iterable[str] | None = None,
    paper_filter: bool = False,
    min_deviation: float = PAPER_MIN_DEVIATION,
) -> list[LabelledCanvas]:
    """Every pancreas slice of the chosen cases as labelled canvases.

    Args:
        root: the MSD Task07 folder.
        cfg: the model's preprocessing (the same as at inference).
        cases: case ids to load (all when None).
        paper_filter: drop tumor slices with mean deviation < ``min_deviation`` (see module doc).

    Returns:
        Canvases in case order, slices inferior -> superior.
    """
    items: list[LabelledCanvas] = []
    for case in _select(list_msd_cases(root), cases):
        ct = read_ct(case.image)
        labels = read_labels(ct, case.label)
        pancreas = labels > 0
        if not pancreas.any():
            raise InputError(f"{case.label}: no pancreas (labels 1 or 2) in this case; remove it from {root}")
        batch = extract_slices(ct, pancreas, cfg)
        tumor = to_canvases((labels == TUMOR).astype(np.float32), batch, order=0) > 0.5
        organ = to_canvases(pancreas.astype(np.float32), batch, order=0) > 0.5
        dropped = (
            _low_contrast_slices(ct.array, labels, batch.reorientation, cfg, min_deviation) if paper_filter else set()
        )
        tiles: dict[int, int] = {}
        for b in range(len(batch)):
            z = int(batch.slice_index[b])
            if z in dropped:
                continue
            tile = tiles[z] = tiles.get(z, -1) + 1
            items.append(
                LabelledCanvas(
                    canvas=batch.canvases[b], valid=batch.valid[b], tumor=int(tumor[b].any()), mask=tumor[b],
                    case=case.case, slice_index=z, name=f"{case.case}_z{z:04d}_t{tile}", source="MSD_Task07",
                    organ=organ[b],
                )
            )  # fmt: skip
    return items


def load_msd_crops(
    root: str | Path,
    cfg: PreprocessConfig,
    spacing_mm: float = 0.8,
    cases: Iterable[str] | None = None,
    paper_filter: bool = False,
    organs: list | None = None,
) -> tuple[list[SliceRecord], list[np.ndarray]]:
    """Pancreas-box crops like ``pancreas-tc``'s, for samplers that work on stored crops.

    Each slice's pancreas bounding box (pancreas + tumor labels), HU windowed by ``cfg.hu_window``,
    in radiological display orientation, resampled to ``spacing_mm`` pixels: the format of the
    slice folders, so MSD and pancreas-tc take one path. Label = tumor anywhere in the slice.
    A list passed as ``organs`` receives each crop's (H, W) bool pancreas (labels 1 and 2), where
    simulated lesions are placed.

    Returns:
        (records, images): ``SliceRecord`` per crop (``path`` is the case's CT) and (H, W) float32 crops.
    """
    records, images = [], []
    for case in _select(list_msd_cases(root), cases):
        ct = read_ct(case.image)
        labels = read_labels(ct, case.label)
        reo = Reorientation.from_image(ct.image)
        hu, lab = reo.apply(ct.array), reo.apply(labels)
        spacing = reo.spacing(ct.image)[1:]
        dropped = _low_contrast_slices(ct.array, labels, reo, cfg, PAPER_MIN_DEVIATION) if paper_filter else set()
        for z in np.flatnonzero((lab > 0).any(axis=(1, 2))):
            k = reo.original_slice_index(int(z), ct.array.shape)
            if k in dropped:
                continue
            rows, cols = np.flatnonzero((lab[z] > 0).any(axis=1)), np.flatnonzero((lab[z] > 0).any(axis=0))
            crop = window_hu(hu[z, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], cfg.hu_window)
            zoom = (spacing[0] / spacing_mm, spacing[1] / spacing_mm)
            images.append(np.clip(ndimage.zoom(crop.astype(np.float32), zoom, order=1), 0.0, 1.0))
            if organs is not None:
                organ = (lab[z, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] > 0).astype(np.float32)
                organs.append(ndimage.zoom(organ, zoom, order=0) > 0.5)  # same shape as the image
            tumor = int((lab[z] == TUMOR).any())
            records.append(SliceRecord(path=case.image, case=case.case, tumor=tumor, source="MSD_Task07"))
    if not records:
        raise InputError(f"{root}: no pancreas slices in the chosen cases")
    return records, images


def write_slice_folder(items: Iterable[LabelledCanvas], out_dir: str | Path, image_format: str = "npy") -> Path:
    """Write labelled canvases in the slice-folder format (``datasets.slice_folder.read_manifest``).

    Layout: ``images/<name>.npy`` (or 16-bit ``.png``) in [0, 1], ``masks/<name>.png`` (tumor,
    0/255, all zero for healthy), ``valid/<name>.png`` (the support) and ``manifest.csv`` with
    columns file, case, tumor, mask, valid, source, slice_index. Written into a temporary folder and
    renamed, so nothing is left behind on failure.
    """
    out_dir = Path(out_dir)
    if image_format not in ("npy", "png"):
        raise InputError(f"{out_dir}: image format must be npy or png, got {image_format!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: exists and is not an empty folder; choose a new output folder")
    items = list(items)
    if not items:
        raise InputError(f"{out_dir}: no slices to write (no pancreas slices selected?)")
    with OutputDir(out_dir) as tmp:  # staged beside out_dir, moved into place whole
        for sub in ("images", "masks", "valid"):
            (tmp / sub).mkdir(parents=True)
        seen: set[str] = set()
        rows = []
        for i, item in enumerate(items):
            name = item.name or f"{item.case}_{i:05d}"
            while name in seen:
                name += "_"
            seen.add(name)
            image_file = f"images/{name}.{image_format}"
            canvas = np.clip(np.asarray(item.canvas, dtype=np.float32), 0.0, 1.0)
            if image_format == "npy":
                np.save(tmp / image_file, canvas)
            else:
                Image.fromarray(np.rint(canvas * 65535).astype(np.uint16)).save(tmp / image_file)
            Image.fromarray(np.asarray(item.mask, dtype=np.uint8) * 255).save(tmp / f"masks/{name}.png")
            Image.fromarray(np.asarray(item.valid, dtype=np.uint8) * 255).save(tmp / f"valid/{name}.png")
            rows.append(
                {"file": image_file, "case": item.case, "tumor": int(item.tumor), "mask": f"masks/{name}.png",
                 "valid": f"valid/{name}.png", "source": item.source, "slice_index": item.slice_index}
            )  # fmt: skip
        with (tmp / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return out_dir


def _select(all_cases: list[MSDCase], cases: Iterable[str] | None) -> list[MSDCase]:
    if cases is None:
        return all_cases
    wanted = set(cases)
    missing = wanted - {c.case for c in all_cases}
    if missing:
        raise InputError(f"case(s) not in the dataset: {', '.join(sorted(missing)[:5])}")
    return [c for c in all_cases if c.case in wanted]


def _low_contrast_slices(
    hu: np.ndarray, labels: np.ndarray, reo: Reorientation, cfg: PreprocessConfig, min_deviation: float
) -> set[int]:
    """Axial indices (CT array) of tumor slices whose tumor/pancreas mean deviation is < min_deviation."""
    hu_v, lab_v = reo.apply(hu), reo.apply(labels)
    dropped = set()
    for z in np.flatnonzero((lab_v == TUMOR).any(axis=(1, 2))):
        window = window_hu(hu_v[z], cfg.hu_window)
        tumor, healthy = lab_v[z] == TUMOR, lab_v[z] == PANCREAS
        if not healthy.any() or abs(window[tumor].mean() - window[healthy].mean()) < min_deviation:
            dropped.add(reo.original_slice_index(int(z), hu.shape))
    return dropped


__all__ = [
    "PAPER_MIN_DEVIATION",
    "LabelledCanvas",
    "MSDCase",
    "list_msd_cases",
    "load_msd_crops",
    "load_msd_slices",
    "split_msd_cases",
    "write_slice_folder",
]
