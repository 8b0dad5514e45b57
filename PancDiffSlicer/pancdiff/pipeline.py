"""One detection run as functions: CT -> pancreas mask -> slices -> Detector -> 3D heatmap -> files.

Three layers, so each caller takes what it needs:

- ``detect_volume``: arrays in, arrays out (the Slicer module shows them in the scene);
- ``write_results``: a ``VolumeDetection`` -> ``heatmap.nii.gz``, ``candidates.nii.gz``,
  ``slices.csv``, ``report.png``, ``summary.json`` in a folder;
- ``run_detect``: a CT path -> that folder's contents and the summary dict (``pancdiff detect``,
  ``pancdiff demo``).

The folder given to ``write_results`` / ``run_detect`` is expected to be a staging folder (see
``pancdiff.outputs.OutputDir``); atomicity is the caller's business, not this module's.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .config import DetectConfig, to_dict
from .markers import DEFAULT_TOLERANCE_MM, ImageGrid, Marker, score_markers
from .progress import QUIET, Reporter, StepProgress

if TYPE_CHECKING:
    from .weights import ModelBundle

RESULT_FILES = ("heatmap.nii.gz", "candidates.nii.gz", "slices.csv", "report.png", "summary.json")
SLICES_CSV_COLUMNS = (
    "slice_index", "tumor_probability", "map_max", "anomaly_max", "candidate_voxels",
    "peak_i", "peak_j", "peak_k",
    "peak_lps_x_mm", "peak_lps_y_mm", "peak_lps_z_mm",
    "peak_ras_x_mm", "peak_ras_y_mm", "peak_ras_z_mm",
)  # fmt: skip
OVERALL_CONFIDENCE_DEFINITION = (
    "maximum over the analyzed slices of the classifier's tumor probability p(tumor | slice, t=0), "
    "Platt-calibrated where the model card has a confidence_calibration"
)
PEAK_RANKING = (
    "slices with a non-empty map, ranked by tumor probability, then by raw anomaly maximum; "
    "peak = strongest voxel of the slice's heatmap, by its unclipped smoothed anomaly (DetectConfig.peak_sigma_px)"
)
PANCREAS_COVERAGE_DEFINITION = (
    "fraction of the pancreas mask's voxels where the map is used: inside a canvas support, more than "
    "edge_mm from its edge (crop border, tile seam, fill, air); elsewhere the heatmap is 0"
)
REPORT_ROWS = 4
SUMMARY_PEAKS = 5


@dataclass(frozen=True)
class SliceFinding:
    """What the detector says about one analyzed CT slice.

    Attributes:
        slice_index: k in the CT array (z, y, x).
        tumor_probability: max over the slice's tiles of p(tumor | x, t=0).
        map_max: max of the normalized heatmap in the slice (CT grid).
        anomaly_max: max of the raw anomaly map over the slice's tiles (comparable across slices, unlike
            the per-slice normalized map), in the map's own units: intensity for the guided map, the
            healthy-calibrated units of ``pancdiff.lesion_head`` for a bundle with a lesion head.
        candidate_voxels: candidate voxels in the slice.
        peak_ijk: (i, j, k) voxel of the slice's peak (strongest unclipped evidence), or None where the map is empty.
        peak_lps: its LPS position in mm, or None.
        view_index: the slice in the radiological (LPS-ordered) view of the CT array.
        peak_rc: (row, col) of the peak in that view slice, or None.
    """

    slice_index: int
    tumor_probability: float
    map_max: float
    anomaly_max: float
    candidate_voxels: int
    peak_ijk: tuple[int, int, int] | None
    peak_lps: tuple[float, float, float] | None
    view_index: int = 0
    peak_rc: tuple[int, int] | None = None

    def as_row(self) -> dict[str, Any]:
        """A ``slices.csv`` row (RAS = LPS with the first two signs flipped)."""
        ijk = self.peak_ijk or (None, None, None)
        lps = self.peak_lps or (None, None, None)
        ras = (None, None, None) if self.peak_lps is None else (-lps[0], -lps[1], lps[2])
        values = [self.slice_index, round(self.tumor_probability, 6), round(self.map_max, 6),
                  round(self.anomaly_max, 6), self.candidate_voxels, *ijk,
                  *(_round(v) for v in lps), *(_round(v) for v in ras)]  # fmt: skip
        return dict(zip(SLICES_CSV_COLUMNS, values))

    def as_peak(self, rank: int) -> dict[str, Any]:
        row = self.as_row()
        return {
            "rank": rank,
            "slice_index": self.slice_index,
            "tumor_probability": row["tumor_probability"],
            "map_max": row["map_max"],
            "anomaly_max": row["anomaly_max"],
            "candidate_voxels": self.candidate_voxels,
            "peak_voxel_ijk": None if self.peak_ijk is None else list(self.peak_ijk),
            "peak_lps_mm": None
            if self.peak_lps is None
            else [row["peak_lps_x_mm"], row["peak_lps_y_mm"], row["peak_lps_z_mm"]],
            "peak_ras_mm": None
            if self.peak_lps is None
            else [row["peak_ras_x_mm"], row["peak_ras_y_mm"], row["peak_ras_z_mm"]],
        }


@dataclass
class VolumeDetection:
    """A detection in the CT's own voxel grid.

    Attributes:
        heatmap: (z, y, x) float32 normalized map in [0, 1]; 0 outside the analyzed slices.
        candidates: (z, y, x) bool, ``heatmap >= cfg.threshold``.
        findings: one per analyzed slice, in slice order.
        cfg: the settings used.
        grid: the CT's geometry.
        canvases, reconstructions, tile_maps: (B, S, S) model inputs, healthy reconstructions and
            evidence maps on the canvas (``postprocess.evidence_maps``; the report shows them).
        tile_valid: (B, S, S) bool canvas supports.
        tile_trusted: (B, S, S) bool, the supports less their edge band (``postprocess.trusted_support``).
        tile_anomaly: (B, S, S) raw |x - x_hat| on the trusted support (0 elsewhere).
        tile_transforms: per canvas, its ``CanvasTransform`` (view slice pixels <-> canvas pixels).
        tile_view: (B,) the canvas's slice in the radiological view.
        pancreas_coverage: fraction of the pancreas mask's voxels the trusted maps cover.
        reorientation: the CT array -> radiological view (``pancdiff.preprocess.Reorientation``).
        view_spacing: (row, col) pixel size of the view's slices in mm.
        tile_slice: (B,) slice index (CT array) of each canvas.
        tile_probability: (B,) tumor probability of each canvas.
        evaluations_per_slice: network passes per canvas.
        map_student: whether the bundle's map student stood in for the K-step decode (``pancdiff.map_student``);
            never on a CT outside the card's input domain, where the K-step decode runs.
        lesion_head: whether the bundle's lesion head was averaged into the heatmap (``pancdiff.lesion_head``);
            it runs only where the map student does.
        device: the torch device it ran on.
        seconds: wall time per stage.
        encoding: where the DDIM encoding came from (``summary.json`` "encoding", see ``_detect_cached``).
        fine_texture_hu: the CT's fine texture in the pancreas zone (``pancdiff.input_domain``), or None.
    """

    heatmap: np.ndarray
    candidates: np.ndarray
    findings: list[SliceFinding]
    cfg: DetectConfig
    grid: ImageGrid
    canvases: np.ndarray
    reconstructions: np.ndarray
    tile_maps: np.ndarray
    tile_valid: np.ndarray
    reorientation: Any
    view_spacing: tuple[float, float]
    tile_slice: np.ndarray
    tile_probability: np.ndarray
    tile_trusted: np.ndarray | None = None
    tile_anomaly: np.ndarray | None = None
    tile_transforms: list = field(default_factory=list)
    tile_view: np.ndarray | None = None
    pancreas_coverage: float | None = None
    evaluations_per_slice: int = 0
    map_student: bool = False
    lesion_head: bool = False
    device: str = "cpu"
    seconds: dict[str, float] = field(default_factory=dict)
    encoding: dict[str, Any] = field(default_factory=dict)
    fine_texture_hu: float | None = None

    @property
    def overall_confidence(self) -> float | None:
        """See ``OVERALL_CONFIDENCE_DEFINITION``; None when no slice was analyzed."""
        return max((f.tumor_probability for f in self.findings), default=None)

    def ranked(self) -> list[SliceFinding]:
        """Strongest findings first (see ``PEAK_RANKING``); slices whose map is empty come last."""
        return sorted(
            self.findings, key=lambda f: (f.peak_ijk is None, -f.tumor_probability, -f.anomaly_max, f.slice_index)
        )


def resolve_config(base: DetectConfig, **overrides: Any) -> DetectConfig:
    """The model's operating point with the user's settings on top (None = keep the model's).

    A noise level given without steps keeps the model's step size (``DetectConfig.at``; sample CT,
    N = 200: r 0.76 at a fixed K = 4, 0.89 at K = 8); K = N is the paper-exact run.

    Raises:
        InputError: the combination is invalid (from ``DetectConfig``'s own check).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    noise, steps = given.pop("noise_level", None), given.pop("steps", None)
    cfg = dataclasses.replace(base, **given)
    if noise is None:
        return cfg.at(cfg.noise_level, cfg.steps if steps is None else steps)
    return cfg.at(noise, steps)


def detect_volume(
    ct,
    mask: np.ndarray,
    bundle: ModelBundle | Callable[[], ModelBundle],
    overrides: dict[str, Any] | None = None,
    reporter: Reporter = QUIET,
    encoding_cache: str | Path | None = None,
) -> VolumeDetection:
    """Run the detector on every pancreas slice of a CT and paste the maps back into its grid.

    Args:
        ct: a ``pancdiff.ctio.CTVolume`` (``array`` (z, y, x) HU, ``image`` with the geometry).
        mask: (z, y, x) bool pancreas mask on the CT's grid.
        bundle: the models, or a function returning them (called here, after the caller read the CT
            and mask, so bad input fails before the slow model load; the model's preprocessing
            config shapes the slices).
        overrides: DetectConfig fields given by the user (None values keep the model's defaults).
        reporter: progress sink.
        encoding_cache: folder of DDIM encodings (``pancdiff.encoding_cache``): a rerun on the same
            CT and mask with the same N, K and model decodes the kept x_N instead of encoding again.

    Returns:
        The detection in the CT's grid.

    Raises:
        InputError: no slice to analyze, or invalid settings.
    """
    from .detection import Detector
    from .input_domain import check as check_domain
    from .input_domain import fine_texture_hu
    from .postprocess import evidence_maps, near_mask, peak_evidence, trusted_support
    from .preprocess import extract_slices, pancreas_zones, paste_back

    seconds: dict[str, float] = {}
    grid = ImageGrid.from_image(ct.image)
    t0 = time.monotonic()
    if callable(bundle):
        bundle = bundle()
    cfg = resolve_config(bundle.operating_point, **(overrides or {}))
    seconds["model_load"] = time.monotonic() - t0

    reporter.stage("preprocess", "pancreas slices onto the model's canvas")
    t0 = time.monotonic()
    batch = extract_slices(ct, mask, bundle.preprocess)
    seconds["preprocess"] = time.monotonic() - t0

    n_slices = len(np.unique(batch.slice_index))
    t0 = time.monotonic()
    zone = pancreas_zones(mask, batch, bundle.preprocess)
    texture = fine_texture_hu(batch.canvases, zone, bundle.preprocess.hu_window)
    if cfg.map_student and check_domain(texture, (bundle.card or {}).get("input_domain"))["inside"] is False:
        # the student learned from in-domain crops only: on the smoother sample CT it follows the paper-exact
        # map at r 0.86 where the K-step decode does at 0.99 (model_runs/20261129-map-student); the lesion
        # head, trained on the same crops, runs only with the student
        cfg = dataclasses.replace(cfg, map_student=False)
    detector = Detector(bundle, cfg)
    decode = f"K={detector.cfg.steps} + map student" if detector.student is not None else f"K={cfg.steps}"
    decode += " + lesion head" if detector.head is not None else ""
    reporter.stage(
        "detect", f"{len(batch.canvases)} canvases from {n_slices} slices, S={cfg.scale:g} N={cfg.noise_level} {decode}"
    )
    result, encoding = _detect_cached(detector, batch.canvases, batch.valid, zone, encoding_cache, reporter)
    seconds["detect"] = time.monotonic() - t0

    t0 = time.monotonic()
    trusted = trusted_support(batch.canvases, batch.valid, cfg.edge_mm / bundle.preprocess.pixel_spacing_mm)
    tile_maps = evidence_maps(result.anomaly, trusted, cfg)
    heatmap = paste_back(tile_maps, batch, reduce="max", valid=trusted)  # (z, y, x) float32, CT-sized
    np.clip(heatmap, 0.0, 1.0, out=heatmap)
    allowed = near_mask(mask, tuple(reversed(ct.image.GetSpacing())), cfg.pancreas_margin_mm)
    heatmap[~allowed] = 0.0
    del allowed
    candidates = heatmap >= cfg.threshold
    seen = paste_back(trusted.astype(np.float32), batch, reduce="max", valid=trusted) > 0.5
    coverage = float(np.count_nonzero(seen & mask)) / max(int(np.count_nonzero(mask)), 1)
    del seen
    tile_slice = np.asarray(batch.slice_index, dtype=np.int64)
    tile_anomaly = np.where(trusted, result.anomaly, 0.0).astype(np.float32)
    peaks = paste_back(peak_evidence(result.anomaly, trusted, tile_maps, cfg), batch, reduce="max", valid=trusted)
    peaks[heatmap <= 0] = 0.0
    findings = _findings(
        heatmap, candidates, batch.reorientation, np.asarray(batch.lps_index), result.tumor_probability,
        tile_anomaly, grid, peaks,
    )  # fmt: skip
    del peaks
    seconds["paste_back"] = time.monotonic() - t0
    return VolumeDetection(
        heatmap=heatmap,
        candidates=candidates,
        findings=findings,
        cfg=cfg,
        grid=grid,
        canvases=np.asarray(batch.canvases),
        reconstructions=result.reconstruction,
        tile_maps=tile_maps,
        tile_valid=np.asarray(batch.valid),
        tile_trusted=trusted,
        tile_anomaly=tile_anomaly,
        tile_transforms=list(batch.transforms),
        tile_view=np.asarray(batch.lps_index, dtype=np.int64),
        pancreas_coverage=coverage,
        reorientation=batch.reorientation,
        view_spacing=tuple(float(v) for v in batch.spacing_mm),
        tile_slice=tile_slice,
        tile_probability=np.asarray(result.tumor_probability, dtype=np.float32),
        evaluations_per_slice=int(getattr(result, "evaluations_per_slice", 0)),
        map_student=detector.student is not None,
        lesion_head=detector.head is not None,
        device=str(detector.device),
        seconds=seconds,
        encoding=encoding,
        fine_texture_hu=texture,
    )


def _detect_cached(detector, canvases, valid, zone, cache_dir: str | Path | None, reporter: Reporter):
    """``Detector.detect`` (canvases, supports, pancreas zones) with a progress bar, the encoding taken
    from / kept in ``cache_dir`` (None: no cache).

    Returns the result and the summary's "encoding": ``cache`` (off, hit, miss, or "miss, not saved"
    when the folder refused the write), ``from_cache``, ``encode_s`` (seconds spent encoding, 0 on a
    hit) and, with a cache, ``cache_s`` (hashing, reading, writing) and ``cache_dir``.
    """
    from .encoding_cache import EncodingCache, encoding_key

    cache = None if cache_dir is None else EncodingCache(cache_dir, log=reporter.info)
    latents, key, t0 = None, "", time.monotonic()
    if cache is not None:
        key = encoding_key(canvases, detector.encoding_identity())
        latents = cache.load(key, (len(canvases), 1, *np.shape(canvases)[1:]))
    cache_s = time.monotonic() - t0
    if latents is not None:
        reporter.info("encoding cache: reusing the DDIM encoding of an earlier run; decoding only")
    n = len(canvases)
    # The detector counts network passes (2K or more per batch, one bar step each); the bar counts
    # canvases, the unit the stage line names, so "K = 10" never shows as 20 steps.
    with StepProgress(reporter, "detect", unit="canvas") as bridge:
        result = detector.detect(
            canvases,
            valid,
            progress=lambda done, total: bridge(n * done // max(total, 1), n),
            latents=latents,
            zone=zone,
        )
    status = "off" if cache is None else "hit" if latents is not None else "miss"
    if status == "miss":
        t0 = time.monotonic()
        if not cache.store(key, result.latents):
            status = "miss, not saved"
        cache_s += time.monotonic() - t0
    encoding = {"cache": status, "from_cache": latents is not None, "encode_s": round(result.encode_seconds, 3)}
    if cache is not None:
        encoding.update(cache_s=round(cache_s, 3), cache_dir=str(cache_dir))
    return result, encoding


def _findings(
    heatmap: np.ndarray,
    candidates: np.ndarray,
    reorientation,
    tile_view: np.ndarray,
    tile_probability: np.ndarray,
    tile_anomaly: np.ndarray,
    grid: ImageGrid,
    peaks: np.ndarray,
) -> list[SliceFinding]:
    """Per analyzed slice: tile maxima, heatmap peak and its position.

    Slices are taken in the radiological view (its axis 0 is the axial axis whatever order the
    scanner stored the voxels in), and peaks are mapped back to the CT's own voxel index. The peak is
    the maximum of ``peaks`` (``postprocess.peak_evidence`` pasted back: unclipped, so a heatmap
    saturated at 1.0 over many voxels still has one strongest voxel), of the heatmap in a slice where
    ``peaks`` is 0 throughout.
    """
    heat_view, cand_view, peak_view = (reorientation.apply(v) for v in (heatmap, candidates, peaks))
    tile_anomaly_max = np.asarray(tile_anomaly).reshape(len(tile_view), -1).max(axis=1)
    out = []
    for z in np.unique(tile_view):
        tiles = tile_view == z
        plane = heat_view[z]
        peak_ijk = peak_lps = peak_rc = None
        if plane.max() > 0:
            source = peak_view[z] if peak_view[z].max() > 0 else plane
            r, c = np.unravel_index(int(np.argmax(source)), plane.shape)
            peak_rc = (int(r), int(c))
            peak_ijk = _view_to_ijk(reorientation, heatmap.shape, (int(z), int(r), int(c)))
            peak_lps = tuple(float(v) for v in grid.index_to_lps(np.array(peak_ijk))[0])
        out.append(
            SliceFinding(
                slice_index=int(reorientation.original_slice_index(int(z), heatmap.shape)),
                tumor_probability=float(np.max(tile_probability[tiles])),
                map_max=float(plane.max()),
                anomaly_max=float(np.max(tile_anomaly_max[tiles])),
                candidate_voxels=int(cand_view[z].sum()),
                peak_ijk=peak_ijk,
                peak_lps=peak_lps,
                view_index=int(z),
                peak_rc=peak_rc,
            )
        )
    return out


def _view_to_ijk(reorientation, shape: tuple[int, ...], zrc: tuple[int, int, int]) -> tuple[int, int, int]:
    """A voxel of the radiological view -> the CT's ITK index (i, j, k)."""
    zyx = [0, 0, 0]
    for view_axis, value in enumerate(zrc):
        axis = reorientation.axes[view_axis]
        zyx[axis] = shape[axis] - 1 - value if reorientation.flips[view_axis] else value
    return int(zyx[2]), int(zyx[1]), int(zyx[0])


def write_results(
    out_dir: str | Path,
    ct,
    mask: np.ndarray,
    det: VolumeDetection,
    bundle_info: dict[str, Any],
    *,
    markers: list[Marker] | None = None,
    markers_info: dict[str, Any] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    hu_window: tuple[float, float] = (-150.0, 250.0),
    extra: dict[str, Any] | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write the five result files of one CT into ``out_dir``; returns the summary.

    Args:
        out_dir: an existing (staging) folder.
        ct: the ``CTVolume`` the detection ran on (its image gives the output geometry).
        mask: (z, y, x) bool pancreas mask (report zoom and summary).
        det: the detection.
        bundle_info: ``model_info(bundle)``.
        markers: reference points to score against the candidates, or None.
        markers_info: where the markers came from (file, coordinate system), for the summary.
        tolerance_mm: hit distance for markers.
        hu_window: report display window.
        extra: more summary keys (input description, timing of earlier stages).
        reference: (z, y, x) bool known lesion (the demo's simulated one), outlined in the report
            and its largest section always shown.
    """
    from .ctio import write_like
    from .input_domain import check
    from .report import render_report

    out = Path(out_dir)
    t0 = time.monotonic()
    write_like(det.heatmap, ct.image, out / "heatmap.nii.gz", np.float32)
    write_like(det.candidates.astype(np.uint8), ct.image, out / "candidates.nii.gz", np.uint8)
    with open(out / "slices.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SLICES_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(f.as_row() for f in det.findings)

    ranked = det.ranked()
    view = det.reorientation.apply
    scored = (
        None
        if markers is None
        else score_markers(markers, det.heatmap, det.candidates, det.grid, tolerance_mm, pancreas=mask)
    )
    plan = report_plan(det, markers or [], scored, reference)
    untrained = bool(bundle_info.get("untrained"))
    cfg = det.cfg
    domain = check(det.fine_texture_hu, bundle_info.get("input_domain"))
    render_report(
        out / "report.png",
        view(np.asarray(ct.array)),
        view(det.heatmap),
        view(det.candidates),
        det.view_spacing,
        [_report_row(det, item, mask, reference) for item in plan],
        slice_strip(det, plan, reference),
        pancreas=view(np.asarray(mask, dtype=bool)),
        reference=None if reference is None else view(np.asarray(reference, dtype=bool)),
        points=[item.point for item in _marker_items(det, markers or [], scored)],
        hu_window=hu_window,
        threshold=cfg.threshold,
        title=f"PancDiff: {Path(str(getattr(ct, 'path', 'CT'))).name}   overall confidence "
        f"{_fmt(det.overall_confidence)}",
        subtitle=f"model {bundle_info.get('model_id')}   S={cfg.scale:g}  N={cfg.noise_level}  K={cfg.steps}"
        f"{learned_parts(det)}  threshold={cfg.threshold:g}",
        confidence_note=confidence_note(det.overall_confidence, bundle_info, domain),
        anomaly_range=_anomaly_range(hu_window),
        warning="UNTRAINED RANDOM WEIGHTS: pipeline test only, the maps mean nothing" if untrained else "",
    )

    summary: dict[str, Any] = {
        "pancdiff_version": __version__,
        "model_id": bundle_info.get("model_id"),
        **(extra or {}),
        "model": bundle_info,
        "settings": to_dict(cfg),
        "overall_confidence": det.overall_confidence,
        "overall_confidence_definition": OVERALL_CONFIDENCE_DEFINITION,
        "input_domain": domain,
        "analyzed_slices": len(det.findings),
        "analyzed_tiles": len(det.tile_slice),
        "evaluations_per_slice": det.evaluations_per_slice,
        "map_student": det.map_student,
        "lesion_head": det.lesion_head,
        "candidate_voxels": int(det.candidates.sum()),
        "pancreas_coverage": None if det.pancreas_coverage is None else round(det.pancreas_coverage, 4),
        "pancreas_coverage_definition": PANCREAS_COVERAGE_DEFINITION,
        "candidate_volume_ml": round(float(det.candidates.sum()) * float(np.prod(det.grid.spacing)) / 1000.0, 3),
        "encoding": det.encoding,
        "peaks_ranking": PEAK_RANKING,
        "peaks": [f.as_peak(n) for n, f in enumerate([f for f in ranked if f.peak_ijk][:SUMMARY_PEAKS], start=1)],
    }
    summary["report_slices"] = [
        {"slice_index": item.slice_index, "position_mm": round(item.position_mm, 2), "reason": item.reason}
        for item in plan
    ]
    if scored is not None:
        summary["markers"] = {**(markers_info or {}), **scored}
    timing = {**summary.pop("timing_s", {}), **det.seconds, "write": time.monotonic() - t0}
    summary["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
    summary["timing_s"]["total"] = round(sum(timing.values()), 3)
    summary["outputs"] = list(RESULT_FILES)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


@dataclass(frozen=True)
class ReportItem:
    """A slice the report shows, and why (``report_plan``)."""

    view_index: int
    slice_index: int
    position_mm: float
    reason: str
    focus_rc: tuple[float, float] | None = None
    note: str = ""


@dataclass(frozen=True)
class _MarkerItem:
    point: Any  # report.ReportPoint
    view_index: int | None
    note: str


def learned_parts(det: VolumeDetection) -> str:
    """" (map student + lesion head)", " (map student)" or "": which learned parts stood in, for titles."""
    parts = [name for name, on in (("map student", det.map_student), ("lesion head", det.lesion_head)) if on]
    return f" ({' + '.join(parts)})" if parts else ""


def slice_position_mm(det: VolumeDetection, view_index: int) -> float:
    """Position of a view slice along the patient's axis: LPS z of its central voxel, in mm."""
    shape = det.heatmap.shape
    rows, cols = (shape[det.reorientation.axes[a]] for a in (1, 2))
    ijk = _view_to_ijk(det.reorientation, shape, (int(view_index), rows // 2, cols // 2))
    return float(det.grid.index_to_lps(np.array(ijk))[0][2])


def _ijk_to_view(reorientation, shape: tuple[int, ...], ijk: np.ndarray) -> tuple[float, float, float]:
    """A continuous ITK index (i, j, k) -> (z, row, col) in the radiological view."""
    zyx = (float(ijk[2]), float(ijk[1]), float(ijk[0]))
    out = []
    for view_axis in range(3):
        axis = reorientation.axes[view_axis]
        value = zyx[axis]
        out.append(shape[axis] - 1 - value if reorientation.flips[view_axis] else value)
    return out[0], out[1], out[2]


def _marker_items(det: VolumeDetection, markers: list[Marker], scored: dict[str, Any] | None) -> list[_MarkerItem]:
    from .report import ReportPoint

    items = []
    points = (scored or {}).get("points", [])
    for n, marker in enumerate(markers):
        ijk = det.grid.lps_to_index(np.asarray(marker.position_lps))[0]
        zrc = _ijk_to_view(det.reorientation, det.heatmap.shape, ijk)
        z = int(round(zrc[0]))
        inside = 0 <= z < det.reorientation.apply(det.heatmap).shape[0]
        note = ""
        if n < len(points):
            row = points[n]
            distance = row["distance_to_candidate_mm"]
            far = "no candidate" if distance is None else f"{distance:.1f} mm from a candidate"
            note = f"{marker.label}: {row.get('result', 'hit' if row['hit'] else 'miss')}, {far}"
        items.append(_MarkerItem(ReportPoint(marker.label, zrc, note), z if inside else None, note))
    return items


def report_plan(
    det: VolumeDetection,
    markers: list[Marker],
    scored: dict[str, Any] | None = None,
    reference: np.ndarray | None = None,
    findings: int = REPORT_ROWS,
    most: int = 8,
) -> list[ReportItem]:
    """The slices the report shows: every marker's slice, the known lesion's largest section, then the
    strongest findings (slices with a non-empty map, ``VolumeDetection.ranked``).

    At least two findings are shown where there are any, and at least ``findings`` rows in all; at
    most ``most`` rows (markers first).
    """
    items: dict[int, ReportItem] = {}

    def add(z: int, reason: str, focus=None, note: str = "") -> None:
        if z in items:
            old = items[z]
            items[z] = ReportItem(
                z, old.slice_index, old.position_mm, f"{old.reason}; {reason}", old.focus_rc or focus,
                "; ".join(t for t in (old.note, note) if t),
            )  # fmt: skip
        elif len(items) < most:
            k = det.reorientation.original_slice_index(z, det.heatmap.shape)
            items[z] = ReportItem(z, int(k), slice_position_mm(det, z), reason, focus, note)

    for item in _marker_items(det, markers, scored):
        if item.view_index is not None:
            add(item.view_index, f"marker {item.point.label}", item.point.view_zrc[1:], item.note)
    if reference is not None and np.any(reference):
        ref = det.reorientation.apply(np.asarray(reference, dtype=bool))
        z = int(np.argmax(ref.sum(axis=(1, 2))))
        rr, cc = np.nonzero(ref[z])
        add(z, "known lesion (largest section)", (float(rr.mean()), float(cc.mean())))
    required = len(items)
    shown = 0
    for finding in det.ranked():
        if finding.peak_ijk is None or (shown >= 2 and len(items) >= max(findings, required + 2)):
            break
        shown += 1
        add(finding.view_index, f"finding {shown}", finding.peak_rc)
    return list(items.values())


def _report_row(det: VolumeDetection, item: ReportItem, mask: np.ndarray, reference: np.ndarray | None):
    """A ``report.ReportRow`` for one planned slice, with the tile that holds its point of interest."""
    from .report import ReportRow

    finding = next((f for f in det.findings if f.view_index == item.view_index), None)
    base = {
        "view_index": item.view_index,
        "slice_index": item.slice_index,
        "position_mm": item.position_mm,
        "reason": item.reason,
        "note": item.note,
        "tumor_probability": None if finding is None else finding.tumor_probability,
        "peak_rc": None if finding is None else finding.peak_rc,
    }
    tiles = np.flatnonzero(det.tile_view == item.view_index) if det.tile_view is not None else np.array([])
    if len(tiles) == 0 or not det.tile_transforms:
        return ReportRow(**base)
    best = tiles[int(np.argmax(det.tile_probability[tiles]))]
    focus = item.focus_rc or base["peak_rc"]
    if focus is not None:
        for t in tiles:
            r, c = _to_canvas_rc(det.tile_transforms[t], focus)
            size = det.tile_valid.shape[1]
            if 0 <= round(r) < size and 0 <= round(c) < size and det.tile_valid[t, round(r), round(c)]:
                best = t
                break
    transform = det.tile_transforms[best]
    view = det.reorientation.apply
    outlines = [("pancreas", _slice_to_canvas(transform, view(np.asarray(mask))[item.view_index]))]
    if reference is not None:
        outlines.append(("reference", _slice_to_canvas(transform, view(np.asarray(reference))[item.view_index])))
    points = []
    if item.focus_rc is not None and item.reason.startswith("marker"):
        points.append(_to_canvas_rc(transform, item.focus_rc))
    return ReportRow(
        **base,
        canvas=det.canvases[best],
        reconstruction=det.reconstructions[best],
        # what the panel says: the reconstruction's whole change, in intensity (the map may be in other units)
        anomaly=np.where(det.tile_valid[best], np.abs(det.canvases[best] - det.reconstructions[best]), 0.0),
        valid=det.tile_valid[best],
        canvas_outlines=tuple(outlines),
        canvas_points=tuple(points),
    )


def _slice_to_canvas(transform, plane: np.ndarray) -> np.ndarray:
    return transform.to_canvas(np.ascontiguousarray(plane, dtype=np.float32), order=1, cval=0.0) > 0.5


def _to_canvas_rc(transform, rc: tuple[float, float]) -> tuple[float, float]:
    """Slice pixel (row, col) -> canvas pixel: the inverse of ``CanvasTransform.to_canvas``'s mapping."""
    scale = transform.canvas_spacing / np.asarray(transform.spacing, dtype=float)
    canvas = (np.asarray(rc, dtype=float) - np.asarray(transform.center, dtype=float)) / scale
    canvas += (transform.size - 1) / 2.0
    return float(canvas[0]), float(canvas[1])


def slice_strip(det: VolumeDetection, plan: list[ReportItem], reference: np.ndarray | None = None):
    """The report's probability strip: every analyzed slice by position, shown / marked slices flagged."""
    from .report import SliceStrip

    positions = [slice_position_mm(det, f.view_index) for f in det.findings]
    ref_span = None
    if reference is not None and np.any(reference):
        zs = np.flatnonzero(det.reorientation.apply(np.asarray(reference, dtype=bool)).any(axis=(1, 2)))
        ends = sorted((slice_position_mm(det, int(zs[0])), slice_position_mm(det, int(zs[-1]))))
        ref_span = (ends[0], ends[1])
    spacing = abs(positions[1] - positions[0]) if len(positions) > 1 else 1.0
    return SliceStrip(
        positions_mm=positions,
        probabilities=[f.tumor_probability for f in det.findings],
        shown_mm=[item.position_mm for item in plan],
        marked_mm=[item.position_mm for item in plan if "marker" in item.reason],
        reference_mm=ref_span,
        spacing_mm=spacing or 1.0,
    )


def _anomaly_range(hu_window: tuple[float, float]) -> tuple[float, str]:
    """Fixed scale of the report's |x - x_hat| panels: a tenth of the intensity window, in HU. Not the
    evidence floor's: that is in the map's units, which a lesion head makes calibrated units."""
    vmax = 0.1
    return vmax, f"|x - x\u0302|, 0-{vmax * (hu_window[1] - hu_window[0]):.0f} HU"


def confidence_note(confidence: float | None, bundle_info: dict[str, Any], domain: dict | None = None) -> str:
    """What the overall confidence means, with the classifier's held-out quality from the model card, and
    the input-domain warning (``pancdiff.input_domain.check``) where the CT lies outside the training range."""
    if confidence is None:
        return ""
    if (domain or {}).get("warning"):
        return f"overall confidence {confidence:.2f}: WARNING, {domain['warning']}"
    text = f"overall confidence {confidence:.2f} = the highest slice p(tumor) of the classifier"
    auroc = bundle_info.get("classifier_auroc")
    ece = bundle_info.get("confidence_ece")
    if auroc is not None:
        text += f"; its slice AUROC on held-out cases is {auroc:.2f} (model card)"
        if ece is None:
            text += ": a ranking score, not a calibrated probability"
    if ece is not None:
        text += (
            f"; calibrated on validation slices (held-out calibration error {ece:.2f}) for the tumor/healthy "
            "mix of its training data, not for a screening population"
        )
    return text


def model_info(bundle: ModelBundle) -> dict[str, Any]:
    """What identifies the model in a summary: id, weight hashes, and whether it is untrained."""
    auroc = ((bundle.card or {}).get("validation") or {}).get("classifier", {}).get("auroc")
    ece = ((bundle.card or {}).get("confidence_calibration") or {}).get("test", {}).get("ece_calibrated")
    return {
        "model_id": bundle.model_id,
        "sha256": dict(bundle.sha256),
        "untrained": bundle.model_id.startswith("untrained"),
        "classifier_auroc": None if auroc is None else round(float(auroc), 3),
        "confidence_calibrated": not bundle.calibration.identity,
        "confidence_ece": None if ece is None or bundle.calibration.identity else round(float(ece), 3),
        "input_domain": (bundle.card or {}).get("input_domain"),
    }


def describe_ct(ct, mask: np.ndarray, mask_source: str) -> dict[str, Any]:
    """The input part of a summary: file, geometry, pancreas mask extent."""
    grid = ImageGrid.from_image(ct.image)
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    return {
        "input": {
            "ct": str(getattr(ct, "path", "")),
            "size_ijk": list(grid.size),
            "spacing_mm": [round(v, 6) for v in grid.spacing],
            "origin_lps_mm": [round(v, 6) for v in grid.origin],
            "direction": [round(v, 6) for v in grid.direction],
        },
        "pancreas_mask": {
            "source": mask_source,
            "voxels": int(mask.sum()),
            "volume_ml": round(float(mask.sum()) * float(np.prod(grid.spacing)) / 1000.0, 3),
            "slices": [int(ks[0]), int(ks[-1])] if len(ks) else None,
        },
    }


def run_detect(
    ct_path: str | Path,
    out_dir: str | Path,
    bundle: ModelBundle | Callable[[], ModelBundle],
    *,
    overrides: dict[str, Any] | None = None,
    mask_source: str | Path = "totalsegmentator",
    series_uid: str | None = None,
    totalseg_fast: bool = True,
    markers: list[Marker] | None = None,
    markers_info: dict[str, Any] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    reporter: Reporter = QUIET,
    encoding_cache: str | Path | None = None,
) -> dict[str, Any]:
    """``pancdiff detect`` for one CT: read, mask, detect, write; returns the summary.

    Args:
        ct_path: NIfTI / NRRD / MHA file or DICOM folder.
        out_dir: existing (staging) folder for the five result files.
        bundle: models or a loader (called once the input is known to be good).
        overrides: DetectConfig fields given by the user.
        mask_source: "totalsegmentator" or a mask file on the CT's grid (or the same extent).
        series_uid: which series of a DICOM folder holding several.
        totalseg_fast: TotalSegmentator's 3 mm model (faster, coarser).
        markers: reference points to score, or None.
        markers_info: their origin, for the summary.
        tolerance_mm: hit distance for markers.
        reporter: progress sink.
        encoding_cache: folder of DDIM encodings reused across runs (``detect_volume``), or None.
    """
    from .ctio import read_ct
    from .pancreas import pancreas_mask

    timing: dict[str, float] = {}
    reporter.stage("read", str(ct_path))
    t0 = time.monotonic()
    ct = read_ct(ct_path, series_uid=series_uid)
    timing["read"] = time.monotonic() - t0

    source = "totalsegmentator" if str(mask_source) == "totalsegmentator" else str(mask_source)
    reporter.stage("pancreas", "TotalSegmentator" if source == "totalsegmentator" else source)
    t0 = time.monotonic()
    device = (overrides or {}).get("device") or "auto"
    mask = pancreas_mask(
        ct, source if source == "totalsegmentator" else Path(source), fast=totalseg_fast, device=device
    )
    timing["pancreas_mask"] = time.monotonic() - t0
    return detect_ct(ct, mask, out_dir, bundle, source=source, overrides=overrides, markers=markers,
                     markers_info=markers_info, tolerance_mm=tolerance_mm, reporter=reporter,
                     timing=timing, encoding_cache=encoding_cache)  # fmt: skip


def detect_ct(
    ct,
    mask: np.ndarray,
    out_dir: str | Path,
    bundle: ModelBundle | Callable[[], ModelBundle],
    *,
    source: str,
    overrides: dict[str, Any] | None = None,
    markers: list[Marker] | None = None,
    markers_info: dict[str, Any] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    reporter: Reporter = QUIET,
    timing: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    reference: np.ndarray | None = None,
    on_detection: Callable[[VolumeDetection], None] | None = None,
    encoding_cache: str | Path | None = None,
) -> dict[str, Any]:
    """``run_detect`` from an already loaded CT and mask (the demo's modified CT goes this way).

    ``reference`` is a known lesion to outline in the report (``write_results``); ``on_detection``
    receives the ``VolumeDetection`` before the files are written (the demo compares two runs);
    ``encoding_cache`` as in ``detect_volume``.
    """
    loaded: list[ModelBundle] = []

    def load() -> ModelBundle:
        loaded.append(bundle() if callable(bundle) else bundle)
        return loaded[0]

    det = detect_volume(ct, mask, load, overrides, reporter, encoding_cache)
    if on_detection is not None:
        on_detection(det)
    reporter.stage("write", "results")
    info = model_info(loaded[0])
    summary_extra = {**describe_ct(ct, mask, source), **(extra or {}), "timing_s": dict(timing or {})}
    summary_extra["environment"] = {"python": platform.python_version(), "device": det.device}
    return write_results(
        out_dir, ct, mask, det, info,
        markers=markers, markers_info=markers_info, tolerance_mm=tolerance_mm,
        hu_window=tuple(loaded[0].preprocess.hu_window), extra=summary_extra, reference=reference,
    )  # fmt: skip


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(float(v), digits)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


__all__ = [
    "RESULT_FILES",
    "SLICES_CSV_COLUMNS",
    "SliceFinding",
    "VolumeDetection",
    "describe_ct",
    "detect_ct",
    "detect_volume",
    "model_info",
    "resolve_config",
    "run_detect",
    "write_results",
]
