"""``report.png``: did it find it? The slices that matter, with what is known drawn on them.

One row per slice: the CT around the pancreas; the model's input, its healthy reconstruction and
their difference (where the slice was analyzed); and the CT under the heatmap (inferno, a
perceptually uniform map that stays readable in grey print) with the candidate outline and the peak.
On every panel: the pancreas outline, the user's markers and a known lesion's outline (the demo's
simulated one), so a reader sees at once whether a candidate sits on what was marked. Rows are the
markers' and the lesion's slices first, then the strongest findings; each is labelled by its
position (z in mm along the patient's axis, and its index k). A strip on top shows the classifier's
tumor probability along the pancreas, shown slices in a neutral blue, marked slices flagged.

``render_comparison`` puts two runs side by side on the same slices (the demo: as is vs with a
simulated lesion), so a finding shows as a difference between the two.

Slices are drawn as radiologists read them (anterior up, patient's right on the left), from the
radiological view that preprocessing already builds. Matplotlib's object API on the Agg canvas (no
pyplot): no global state, no display needed, safe to call from a worker thread in Slicer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEATMAP_CMAP = "inferno"
CANDIDATE_COLOR = "#00e5ff"  # cyan: what the model flags
PANCREAS_COLOR = "#8bc34a"  # green: where a tumor can be
REFERENCE_COLOR = "#ff40c0"  # magenta: what is known (markers, a simulated lesion)
SHOWN_COLOR = "#4a6fa5"  # neutral blue: a slice shown below (not "abnormal")
OTHER_COLOR = "#c8c8c8"
OUTLINE_COLOR = CANDIDATE_COLOR  # kept for callers of the first version


@dataclass(frozen=True)
class ReportPoint:
    """A marker to draw: its label and continuous position (z, row, col) in the radiological view."""

    label: str
    view_zrc: tuple[float, float, float]
    note: str = ""


@dataclass(frozen=True)
class ReportRow:
    """One slice to show.

    Attributes:
        view_index: the slice in the radiological view arrays given to ``render_report``.
        slice_index: the slice's index k in the CT array.
        position_mm: the slice's position along the patient's axis (LPS z, superior positive).
        reason: why it is shown ("marker p1", "simulated lesion", "finding 1").
        tumor_probability: the classifier's probability for this slice, or None (not analyzed).
        peak_rc: (row, col) of the slice's peak in the view slice (``pipeline._findings``), or None.
        canvas: (S, S) model input of the slice's tile shown, [0, 1], or None.
        reconstruction: (S, S) its healthy reconstruction, or None.
        anomaly: (S, S) its evidence map in [0, 1], or None.
        valid: (S, S) bool support of the canvas (the panels zoom on it), or None.
        canvas_outlines: (kind, (S, S) bool) pairs drawn on the canvas panels; kind is "pancreas"
            or "reference".
        canvas_points: (row, col) canvas positions of markers in this slice.
        note: a line under the heatmap panel (e.g. a marker's hit / miss).
    """

    view_index: int
    slice_index: int
    position_mm: float
    reason: str
    tumor_probability: float | None
    peak_rc: tuple[int, int] | None = None
    canvas: np.ndarray | None = None
    reconstruction: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    valid: np.ndarray | None = None
    canvas_outlines: tuple = ()
    canvas_points: tuple = ()
    note: str = ""


@dataclass(frozen=True)
class SliceStrip:
    """The probability strip: every analyzed slice by position.

    Attributes:
        positions_mm: (n,) slice positions (LPS z).
        probabilities: (n,) tumor probability per slice.
        shown_mm: positions of the slices shown as rows.
        marked_mm: positions of slices holding a marker.
        reference_mm: (lo, hi) extent of a known lesion, or None.
        spacing_mm: slice spacing (bar width).
    """

    positions_mm: Sequence[float]
    probabilities: Sequence[float]
    shown_mm: Sequence[float] = ()
    marked_mm: Sequence[float] = ()
    reference_mm: tuple[float, float] | None = None
    spacing_mm: float = 1.0


def render_report(
    path: str | Path,
    ct_hu: np.ndarray,
    heatmap: np.ndarray,
    candidates: np.ndarray,
    pixel_spacing: tuple[float, float],
    rows: Sequence[ReportRow],
    strip: SliceStrip,
    *,
    pancreas: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    points: Sequence[ReportPoint] = (),
    hu_window: tuple[float, float] = (-150.0, 250.0),
    threshold: float | None = None,
    title: str = "PancDiff",
    subtitle: str = "",
    confidence_note: str = "",
    anomaly_range: tuple[float, str] = (1.0, "anomaly |x - x\u0302|"),
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
        rows: slices to show, in order.
        strip: the probability strip's data.
        pancreas: (Z, R, C) bool pancreas mask (outlined, and the panels zoom on it).
        reference: (Z, R, C) bool known lesion (outlined), or None.
        points: markers to draw.
        hu_window: display window.
        threshold: candidate threshold, drawn on the colorbar.
        title, subtitle: heading lines (model, settings).
        confidence_note: what the overall confidence means, over the strip.
        anomaly_range: (vmax, title) of the rows' ``anomaly`` panels: a fixed scale, so rows compare.
        warning: a line in red (e.g. untrained weights).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    show_canvas = any(r.reconstruction is not None for r in rows)
    roi = pancreas if pancreas is not None else np.ones_like(candidates, dtype=bool)
    box = _roi_box(roi, pixel_spacing, margin_mm=25.0)
    aspect = pixel_spacing[0] / pixel_spacing[1]
    crop_ratio = (box[1] - box[0]) * pixel_spacing[0] / max((box[3] - box[2]) * pixel_spacing[1], 1e-6)
    widths = [1.0, 0.62, 0.62, 0.62, 1.0] if show_canvas else [1.0, 1.0]
    panel_in = 2.6
    row_in = max(panel_in * crop_ratio, 0.62 * panel_in) + 0.55
    nrows = max(len(rows), 1)
    fig = Figure(figsize=(panel_in * sum(widths) + 1.0, row_in * nrows + 2.7), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    outer = fig.add_gridspec(2, 1, height_ratios=[1.8, row_in * nrows])
    width_chars = int(14 * (panel_in * sum(widths) + 1.0))
    _draw_strip(fig.add_subplot(outer[0]), [(strip, SHOWN_COLOR, "")], warning, _wrap(confidence_note, width_chars))
    cells = outer[1].subgridspec(nrows, len(widths), width_ratios=widths)

    image = None
    if not rows:
        ax = fig.add_subplot(cells[0, :])
        ax.text(0.5, 0.5, "no pancreas slices were analyzed", ha="center", va="center")
        ax.set_axis_off()
    for n, row in enumerate(rows):
        first = n == 0
        ax = fig.add_subplot(cells[n, 0])
        _ct_panel(ax, ct_hu, row.view_index, box, hu_window, aspect)
        _outlines(ax, row.view_index, box, pancreas, reference, points)
        _label(ax, f"z = {row.position_mm:.1f} mm (k = {row.slice_index})\n{row.reason}")

        if show_canvas:
            window = _canvas_box(row.valid) if row.valid is not None else (slice(None), slice(None))
            panels = (
                (row.canvas, "gray", "model input", 1.0),
                (row.reconstruction, "gray", "healthy reconstruction", 1.0),
                (row.anomaly, HEATMAP_CMAP, anomaly_range[1], anomaly_range[0]),
            )
            for col, (data, cmap, name, vmax) in enumerate(panels, start=1):
                ax = fig.add_subplot(cells[n, col])
                if data is not None:
                    ax.imshow(data[window], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
                    _canvas_overlays(ax, row, window)
                elif col == 2:
                    ax.text(0.5, 0.5, "not analyzed\n(no pancreas here)", ha="center", va="center", fontsize=8)
                _label(ax, name if first else "")

        ax = fig.add_subplot(cells[n, len(widths) - 1])
        image = _heat_panel(ax, ct_hu, heatmap, candidates, row.view_index, box, hu_window, aspect)
        _outlines(ax, row.view_index, box, pancreas, reference, points)
        if row.peak_rc is not None:
            r, c = row.peak_rc[0] - box[0], row.peak_rc[1] - box[2]
            if 0 <= r < box[1] - box[0] and 0 <= c < box[3] - box[2]:
                ax.plot([c], [r], marker="+", color="white", markersize=12, markeredgewidth=1.5)
        p = "not analyzed" if row.tumor_probability is None else f"p(tumor) = {row.tumor_probability:.2f}"
        note = f"\n{_wrap(row.note, 44)}" if row.note else ""
        _label(ax, ("heatmap, candidates\n" if first else "") + p + note)

    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes[1:], shrink=0.5, aspect=30, label="anomaly (normalized)")
        if threshold is not None:
            bar.ax.axhline(threshold, color=CANDIDATE_COLOR, linewidth=2)
    fig.supxlabel(
        _wrap(_legend(reference is not None, bool(points)), int(1.25 * width_chars)), x=0.01, ha="left", fontsize=7
    )
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def render_comparison(
    path: str | Path,
    ct_hu: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    candidates: Sequence[np.ndarray],
    names: Sequence[str],
    pixel_spacing: tuple[float, float],
    view_indices: Sequence[int],
    labels: Sequence[str],
    strips: Sequence[SliceStrip],
    *,
    pancreas: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    points: Sequence[ReportPoint] = (),
    peaks: Sequence[tuple[int, int, int] | None] = (),
    notes: Sequence[str] = (),
    hu_window: tuple[float, float] = (-150.0, 250.0),
    threshold: float | None = None,
    title: str = "",
    warning: str = "",
    zoom_mm: float = 30.0,
    dpi: int = 110,
) -> Path:
    """Two (or more) runs on the same CT grid, side by side on the same slices.

    Args:
        path: where to write the PNG.
        ct_hu, heatmaps, candidates: per run, (Z, R, C) view arrays as in ``render_report``.
        names: per run, its column heading.
        pixel_spacing: (row, col) mm.
        view_indices: the slices to show (rows), in the view.
        labels: per row, its label (position and index).
        strips: per run, its probability strip (drawn on one axis, in the run's colour).
        pancreas, reference, points: drawn on every panel.
        peaks: per run, its strongest peak (z, row, col) in the view, or None; drawn as "+" where it
            falls on a shown slice.
        notes: per run, a line under its column heading (e.g. the heatmap at the lesion).
        hu_window, threshold, title, warning: as in ``render_report``.
        zoom_mm: margin around the known lesion shown (the pancreas region when there is none).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = len(names)
    if reference is not None and reference.any():
        box = _roi_box(reference, pixel_spacing, margin_mm=zoom_mm)  # the known lesion, in context
    else:
        roi = pancreas if pancreas is not None else np.ones_like(candidates[0], dtype=bool)
        box = _roi_box(roi, pixel_spacing, margin_mm=25.0)
    aspect = pixel_spacing[0] / pixel_spacing[1]
    crop_ratio = (box[1] - box[0]) * pixel_spacing[0] / max((box[3] - box[2]) * pixel_spacing[1], 1e-6)
    panel_in = 3.6
    row_in = max(panel_in * crop_ratio, 0.6 * panel_in) + 0.4
    nrows = max(len(view_indices), 1)
    fig = Figure(figsize=(panel_in * runs + 1.2, row_in * nrows + 3.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    width_chars = int(14 * (panel_in * runs + 1.2))
    if title:
        fig.suptitle(_wrap(title, width_chars), fontsize=10)
    outer = fig.add_gridspec(2, 1, height_ratios=[1.8, row_in * nrows])
    colours = (OTHER_COLOR, SHOWN_COLOR, "#e0a030", "#50a050")
    _draw_strip(
        fig.add_subplot(outer[0]),
        [(s, colours[i % len(colours)], names[i]) for i, s in enumerate(strips)],
        warning,
        "",
    )
    cells = outer[1].subgridspec(nrows, runs)
    image = None
    for n, z in enumerate(view_indices):
        for i in range(runs):
            ax = fig.add_subplot(cells[n, i])
            image = _heat_panel(ax, ct_hu[i], heatmaps[i], candidates[i], z, box, hu_window, aspect)
            _outlines(ax, z, box, pancreas, reference, points)
            peak = peaks[i] if i < len(peaks) else None
            if peak is not None and peak[0] == z:
                ax.plot([peak[2] - box[2]], [peak[1] - box[0]], marker="+", color="white", markersize=14, mew=2)
            heading = ""
            if n == 0:
                note = _wrap(notes[i], int(14 * panel_in)) if i < len(notes) and notes[i] else ""
                heading = names[i] + (f"\n{note}" if note else "") + "\n"
            _label(ax, heading + labels[n])
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes[1:], shrink=0.6, aspect=30, label="anomaly (normalized)")
        if threshold is not None:
            bar.ax.axhline(threshold, color=CANDIDATE_COLOR, linewidth=2)
    legend = _legend(reference is not None, bool(points)) + "  Same slices, same colour scale."
    fig.supxlabel(_wrap(legend, int(1.25 * width_chars)), x=0.01, ha="left", fontsize=7)
    path = Path(path)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def _wrap(text: str, width: int) -> str:
    """Wrap each line of ``text`` to ``width`` characters (matplotlib does not wrap titles)."""
    import textwrap

    return "\n".join(textwrap.fill(line, max(width, 20)) for line in text.splitlines())


def _legend(reference: bool, points: bool) -> str:
    parts = ["Research use only, not for diagnosis.", "Cyan: candidates (threshold on the colorbar); +: peak;"]
    parts.append("green: pancreas mask;")
    if reference:
        parts.append("magenta: known lesion;")
    if points:
        parts.append("magenta x: markers;")
    parts.append("slices as read: anterior up, patient's right on the left.")
    return " ".join(parts)


def _ct_panel(ax, ct_hu, z, box, hu_window, aspect) -> None:
    sl = (z, slice(box[0], box[1]), slice(box[2], box[3]))
    ct = np.clip((ct_hu[sl] - hu_window[0]) / (hu_window[1] - hu_window[0]), 0, 1)
    ax.imshow(ct, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")


def _heat_panel(ax, ct_hu, heatmap, candidates, z, box, hu_window, aspect):
    sl = (z, slice(box[0], box[1]), slice(box[2], box[3]))
    _ct_panel(ax, ct_hu, z, box, hu_window, aspect)
    image = ax.imshow(
        np.ma.masked_less_equal(heatmap[sl], 0.0),
        cmap=HEATMAP_CMAP,
        vmin=0,
        vmax=1,
        alpha=0.65,
        aspect=aspect,
        interpolation="nearest",
    )
    cand = candidates[sl]
    if cand.any():
        ax.contour(cand.astype(float), levels=[0.5], colors=CANDIDATE_COLOR, linewidths=1.2)
    return image


def _outlines(ax, z, box, pancreas, reference, points) -> None:
    sl = (z, slice(box[0], box[1]), slice(box[2], box[3]))
    for mask, colour, style in ((pancreas, PANCREAS_COLOR, "solid"), (reference, REFERENCE_COLOR, "dashed")):
        if mask is not None and mask[sl].any():
            ax.contour(mask[sl].astype(float), levels=[0.5], colors=colour, linewidths=0.9, linestyles=style)
    for point in points:
        pz, pr, pc = point.view_zrc
        if int(round(pz)) == z:
            ax.plot([pc - box[2]], [pr - box[0]], marker="x", color=REFERENCE_COLOR, markersize=9, mew=2)


def _canvas_overlays(ax, row: ReportRow, window: tuple[slice, slice]) -> None:
    colours = {"pancreas": (PANCREAS_COLOR, "solid"), "reference": (REFERENCE_COLOR, "dashed")}
    for kind, mask in row.canvas_outlines:
        part = mask[window]
        if part.any() and kind in colours:
            colour, style = colours[kind]
            ax.contour(part.astype(float), levels=[0.5], colors=colour, linewidths=0.8, linestyles=style)
    r0, c0 = window[0].start or 0, window[1].start or 0
    for r, c in row.canvas_points:
        ax.plot([c - c0], [r - r0], marker="x", color=REFERENCE_COLOR, markersize=7, mew=1.5)


def _canvas_box(valid: np.ndarray, pad: int = 2) -> tuple[slice, slice]:
    """The canvas around its valid support: the fill outside says nothing and wastes the panel."""
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if len(rows) == 0:
        return slice(None), slice(None)
    return (
        slice(max(rows[0] - pad, 0), rows[-1] + pad + 1),
        slice(max(cols[0] - pad, 0), cols[-1] + pad + 1),
    )


def _draw_strip(ax, strips: list[tuple[SliceStrip, str, str]], warning: str, note: str) -> None:
    """Tumor probability by slice position; one bar series per run (side by side when several)."""
    series = len(strips)
    for i, (strip, colour, name) in enumerate(strips):
        pos = np.asarray(strip.positions_mm, dtype=float)
        prob = np.asarray(strip.probabilities, dtype=float)
        width = 0.8 * strip.spacing_mm / series
        offset = (i - (series - 1) / 2) * width
        if series == 1:
            shown = np.isin(np.round(pos, 3), np.round(np.asarray(strip.shown_mm, dtype=float), 3))
            ax.bar(pos[~shown], prob[~shown], width=width, color=OTHER_COLOR, label="analyzed slice")
            ax.bar(pos[shown], prob[shown], width=width, color=colour, label="shown below")
        else:
            ax.bar(pos + offset, prob, width=width, color=colour, label=name)
        for m in strip.marked_mm:
            ax.plot([m], [1.04], marker="v", color=REFERENCE_COLOR, markersize=7, clip_on=False)
        if strip.reference_mm is not None and i == 0:
            lo, hi = strip.reference_mm
            half = strip.spacing_mm / 2
            ax.axvspan(lo - half, hi + half, color=REFERENCE_COLOR, alpha=0.12, label="known lesion", zorder=0)
    ax.set_ylim(0, 1)
    marked = any(len(s.marked_mm) for s, _, _ in strips)
    ax.set_xlabel("slice position z (mm, toward the head \u2192)" + ("; \u25bc marker" if marked else ""), fontsize=8)
    ax.set_ylabel("p(tumor)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left", ncol=4, frameon=False)
    pad = 12 if marked else 6  # the markers' triangles stand above the axes: keep the title clear of them
    if warning:
        ax.set_title(warning + (f"\n{note}" if note else ""), color="#c00000", fontsize=9, fontweight="bold", pad=pad)
    elif note:
        ax.set_title(note, fontsize=9, pad=pad)


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


__all__ = [
    "CANDIDATE_COLOR",
    "HEATMAP_CMAP",
    "PANCREAS_COLOR",
    "REFERENCE_COLOR",
    "ReportPoint",
    "ReportRow",
    "SliceStrip",
    "render_comparison",
    "render_report",
]
