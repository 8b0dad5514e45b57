"""Simulated lesions in healthy slices, written as a slice folder with their masks.

Where no real tumor masks exist, a hypoattenuating, ill-defined lesion inserted into a *healthy*
slice (``lesions.insert_lesion``) is the honest way to measure localization: its pixels are known,
and with ``paired=True`` the same slice is kept without the lesion, so only the lesion differs.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..lesions import LesionConfig, insert_lesion
from .msd import LabelledCanvas, write_slice_folder
from .slice_folder import load_slice_image, read_manifest

DEFAULT_LESIONS = LesionConfig()


def simulate_lesions(
    healthy: Sequence[LabelledCanvas],
    spacing_mm: float,
    *,
    fraction: float = 0.5,
    paired: bool = False,
    seed: int = 0,
    cfg: LesionConfig = DEFAULT_LESIONS,
) -> list[LabelledCanvas]:
    """Insert lesions into a share of healthy slices.

    Args:
        healthy: slices without tumor (tumor-labelled ones are skipped).
        spacing_mm: their pixel size (model canvases: ``PreprocessConfig.pixel_spacing_mm``).
        fraction: share of slices that get a lesion (ignored when ``paired``).
        paired: every slice twice, as is (tumor 0) and with a lesion (tumor 1).

    Returns:
        Healthy slices (empty masks) and lesion slices (their masks), source "simulated".
        A slice with no soft tissue deep enough inside its support stays healthy only.
    """
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"lesion fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    out = []
    for i, item in enumerate(h for h in healthy if h.tumor == 0):
        name = item.name or f"{item.case}_{i:05d}"
        want = paired or rng.random() < fraction
        inserted = insert_lesion(item.canvas, item.valid, rng, spacing_mm, cfg) if want else None
        if inserted is None or paired:
            out.append(_copy(item, item.canvas, np.zeros_like(item.valid), 0, name))
        if inserted is not None:
            out.append(_copy(item, inserted[0], inserted[1], 1, f"{name}_lesion"))
    if not out:
        raise InputError("no healthy slices to insert lesions into")
    return out


def read_healthy_slices(root: str | Path) -> list[LabelledCanvas]:
    """Healthy slices of a slice folder; the support comes from its ``valid`` column where present,
    else it is every pixel above 0 (the fill value of windowed crops)."""
    root = Path(root)
    records = read_manifest(root)
    with (root / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        valid_of = {row["file"]: row.get("valid") or "" for row in csv.DictReader(fh)}
    items = []
    for rec in records:
        if rec.tumor != 0:
            continue
        image = load_slice_image(rec.path)
        valid_file = valid_of.get(str(rec.path.relative_to(root)), "")
        valid = load_slice_image(root / valid_file) > 0.5 if valid_file else image > 0.0
        items.append(
            LabelledCanvas(canvas=image, valid=valid, tumor=0, mask=np.zeros_like(valid), case=rec.case,
                           name=rec.path.stem, source=rec.source)
        )  # fmt: skip
    if not items:
        raise InputError(f"{root}: no healthy slices (tumor = 0) to insert lesions into")
    return items


def write_simulated_folder(
    source: str | Path | Sequence[LabelledCanvas],
    out_dir: str | Path,
    *,
    spacing_mm: float,
    fraction: float = 0.5,
    paired: bool = False,
    seed: int = 0,
    cfg: LesionConfig = DEFAULT_LESIONS,
    image_format: str = "npy",
) -> Path:
    """A slice folder of healthy slices and simulated lesions with masks, from healthy slices.

    Args:
        source: a slice folder (its healthy rows are used) or labelled canvases (e.g. from
            ``load_msd_slices``).
        out_dir: new folder to create (refused when it exists and is not empty).
        spacing_mm: pixel size of the source images (canvases: the model's pixel spacing;
            pancreas-tc crops: about 0.8 mm).
    """
    healthy = read_healthy_slices(source) if isinstance(source, (str, Path)) else list(source)
    items = simulate_lesions(healthy, spacing_mm, fraction=fraction, paired=paired, seed=seed, cfg=cfg)
    return write_slice_folder(items, out_dir, image_format=image_format)


def _copy(item: LabelledCanvas, canvas: np.ndarray, mask: np.ndarray, tumor: int, name: str) -> LabelledCanvas:
    return LabelledCanvas(
        canvas=canvas, valid=item.valid, tumor=tumor, mask=mask, case=item.case, slice_index=item.slice_index,
        name=name, source="simulated",
    )  # fmt: skip


__all__ = ["DEFAULT_LESIONS", "read_healthy_slices", "simulate_lesions", "write_simulated_folder"]
