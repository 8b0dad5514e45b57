"""``report.png``: the slices with the strongest findings, drawn like the paper's figures.

One row per slice, as in the paper's figures: the CT around the pancreas; the model's input, its
healthy reconstruction and their difference (when given); and the CT under the heatmap (inferno, a
perceptually uniform map that stays readable in grey print) with the candidate outline and the peak.
A strip on top shows the classifier's tumor probability along the pancreas, so a reader sees at once
whether the finding stands out. Slices are drawn as radiologists read them (anterior up, patient's
right on the left), from the radiological view that preprocessing already builds.

Matplotlib's object API on the Agg canvas (no pyplot): no global state, no display needed, safe to
call from a worker thread in Slicer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEATMAP_CMAP = "inferno"
OUTLINE_COLOR = "#00e5ff"


@dataclass(frozen=True)
class ReportRow:
    """One slice to show.

    Attributes:
        view_index: the slice in the radiological view arrays given to ``render_report``.
        slice_index: the slice's index in the CT array (its label).
        tumor_probability: the classifier's probability for this slice (max over its tiles).
        peak_rc: (row, col) of the heatmap maximum in the view slice, or None.
        canvas: (S, S) model input of the slice's strongest tile, [0, 1], or None.
        reconstruction: (S, S) its healthy reconstruction, or None.
        anomaly: (S, S) its normalized anomaly map in [0, 1], or None.
        valid: (S, S) bool support of the canvas (the panels zoom on it), or None.
    """

    view_index: int
    slice_index: int
    tumor_probability: float
    peak_rc: tuple[int, int] | None = None
    canvas: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    valid: np.ndarray | None = None


def render_report(
    path: str | Path,
    ct_hu: np.ndarray,
    heatmap: np.ndarray,
    candidates: np.ndarray,
    pixel_spacing: tuple[float, float],
    rows: Sequence[ReportRow],
    probabilities: dict[int, float],
    *,
    roi: np.ndarray | None = None,
    hu_window: tuple[float, float] = (-150.0, 250.0),
    threshold: float | None = None,
    title: str = "PancDiff",
    subtitle: str = "",
    warning: str = "",
    dpi: int = 110,
) -> Path:
    """Draw the report and save it as PNG.

    Args:
        path: where to write the PNG.
        ct_hu: (Z, R, C) CT in HU as radiological axial slices (rows anterior -> posterior, columns
            patient right -> left), e.g. ``SliceBatch.reorientation.apply(ct.array)``.
        heatmap: (Z, R, C) normalized map in [0, 1], same view.
        candidates: (Z, R, C) bool, same view.
        pixel_spacing: (row, col) mm, for the pixel aspect.
        rows: slices to show, strongest first.
        probabilities: slice index (label) -> tumor probability of every analyzed slice (the strip).
        roi: (Z, R, C) bool region to zoom on (the pancreas); the whole slice when None.
        hu_window: display window.
        threshold: candidate threshold, drawn on the colorbar.
        title, subtitle: heading lines (model, settings).
        warning: a line in red (e.g. untrained weights).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    show_canvas = any(r.reconstruction is not None for r in rows)
    box = _roi_box(roi if roi is not None else np.ones_like(candidates, dtype=bool), pixel_spacing, margin_mm=25.0)
    aspect = pixel_spacing[0] / pixel_spacing[1]
    crop_ratio = (box[1] - box[0]) * pixel_spacing[0] / max((box[3] - box[2]) * pixel_spacing[1], 1e-6)
    widths = [1.0, 0.62, 0.62, 0.62, 1.0] if show_canvas else [1.0, 1.0]
    panel_in = 2.6
    row_in = max(panel_in * crop_ratio, 0.62 * panel_in) + 0.45
    nrows = max(len(rows), 1)
    fig = Figure(figsize=(panel_in * sum(widths) + 1.0, row_in * nrows + 2.3), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    outer = fig.add_gridspec(2, 1, height_ratios=[1.5, row_in * nrows])
    _draw_probability_strip(fig.add_subplot(outer[0]), probabilities, [r.slice_index for r in rows], warning)
    cells = outer[1].subgridspec(nrows, len(widths), width_ratios=widths)

    image = None
    if not rows:
        ax = fig.add_subplot(cells[0, :])
        ax.text(0.5, 0.5, "no pancreas slices were analyzed", ha="center", va="center")
        ax.set_axis_off()
    for n, row in enumerate(rows):
        sl = (row.view_index, slice(box[0], box[1]), slice(box[2], box[3]))
        ct = np.clip((ct_hu[sl] - hu_window[0]) / (hu_window[1] - hu_window[0]), 0, 1)
        heat, cand = heatmap[sl], candidates[sl]
        first = n == 0

        ax = fig.add_subplot(cells[n, 0])
        ax.imshow(ct, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        _label(ax, f"slice k={row.slice_index}" + ("\nCT, pancreas region" if first else ""))

        if show_canvas:
            window = _canvas_box(row.valid if row.valid is not None else np.ones_like(row.canvas, dtype=bool))
            panels = (
                (row.canvas, "gray", "model input"),
                (row.reconstruction, "gray", "healthy reconstruction"),
                (row.anomaly, HEATMAP_CMAP, "anomaly |x - x\u0302|"),
            )
            for col, (data, cmap, name) in enumerate(panels, start=1):
                ax = fig.add_subplot(cells[n, col])
                if data is not None:
                    ax.imshow(data[window], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
                _label(ax, name if first else "")

        ax = fig.add_subplot(cells[n, len(widths) - 1])
        ax.imshow(ct, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        image = ax.imshow(
            np.ma.masked_less_equal(heat, 0.0),
            cmap=HEATMAP_CMAP,
            vmin=0,
            vmax=1,
            alpha=0.65,
            aspect=aspect,
            interpolation="nearest",
        )
        if cand.any():
            ax.contour(cand.astype(float), levels=[0.5], colors=OUTLINE_COLOR, linewidths=1.2)
        if row.peak_rc is not None:
            r, c = row.peak_rc[0] - box[0], row.peak_rc[1] - box[2]
            if 0 <= r < ct.shape[0] and 0 <= c < ct.shape[1]:
                ax.plot([c], [r], marker="+", color="white", markersize=12, markeredgewidth=1.5)
        _label(ax, ("heatmap, candidates\n" if first else "") + f"p(tumor) = {row.tumor_probability:.2f}")

    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes[1:], shrink=0.5, aspect=30, label="anomaly (normalized)")
        if threshold is not None:
            bar.ax.axhline(threshold, color=OUTLINE_COLOR, linewidth=2)
    fig.text(
        0.01, 0.002, "Research use only, not for diagnosis.  Cyan: candidate outline (threshold on the colorbar); "
        "+: peak.  Slices shown as read: anterior up, patient's right on the left.", fontsize=7,
    )  # fmt: skip
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def _canvas_box(valid: np.ndarray, pad: int = 2) -> tuple[slice, slice]:
    """The canvas around its valid support: the fill outside says nothing and wastes the panel."""
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if len(rows) == 0:
        return slice(None), slice(None)
    return (
        slice(max(rows[0] - pad, 0), rows[-1] + pad + 1),
        slice(max(cols[0] - pad, 0), cols[-1] + pad + 1),
    )


def _draw_probability_strip(ax, probabilities: dict[int, float], shown: list[int], warning: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ks = sorted(probabilities)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ks:
        ax.bar(ks, [probabilities[k] for k in ks], color="#888888", width=0.8)
        ax.bar(shown, [probabilities[k] for k in shown], color="#d1495b", width=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("slice k (shown in red)", fontsize=8)
    ax.set_ylabel("p(tumor)", fontsize=8)
    ax.tick_params(labelsize=7)
    if warning:
        ax.set_title(warning, color="#c00000", fontsize=9, fontweight="bold")


def _label(ax, text: str) -> None:
    ax.set_title(text, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _roi_box(roi: np.ndarray, pixel_spacing: tuple[float, float], margin_mm: float) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the ROI's in-plane bounding box over all slices, plus a margin."""
    rows = np.flatnonzero(roi.any(axis=(0, 2)))
    cols = np.flatnonzero(roi.any(axis=(0, 1)))
    if len(rows) == 0:
        return 0, roi.shape[1], 0, roi.shape[2]
    mr = round(margin_mm / pixel_spacing[0])
    mc = round(margin_mm / pixel_spacing[1])
    return (
        max(rows[0] - mr, 0),
        min(rows[-1] + mr + 1, roi.shape[1]),
        max(cols[0] - mc, 0),
        min(cols[-1] + mc + 1, roi.shape[2]),
    )


__all__ = ["HEATMAP_CMAP", "ReportRow", "render_report"]
