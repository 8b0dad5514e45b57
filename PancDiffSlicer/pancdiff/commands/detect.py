"""Find pancreatic tumors in a CT as anomalies: guided diffusion reconstructs a healthy pancreas, the
difference is the heatmap.

One CT writes into --out:
  heatmap.nii.gz     float32 normalized anomaly map in [0, 1], the CT's exact geometry
                     (0 outside the analyzed pancreas slices); load it over the CT in Slicer
  candidates.nii.gz  uint8, 1 where heatmap >= threshold
  slices.csv         per analyzed slice: tumor probability, map maximum, peak voxel and position
  summary.json       settings, model id and SHA-256, overall confidence, peaks, markers, timing
  report.png         the slices with the strongest findings

Several CTs, or a CSV listing them (columns: ct, and optionally case, pancreas_mask, markers,
series_uid; paths relative to the CSV), run as a cohort: one subfolder per case plus
cohort_summary.csv. A CT that fails is listed there with its error and the others go on; the exit
code is 2 only when every CT failed. With --shard i/n (i = 1..n) a job-array task takes every n-th
CT starting at the i-th; give each shard its own --out.

Results appear all at once: a cancelled or failed run leaves nothing behind. Settings you do not
give come from the model's operating point (see its model card).
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DependencyError, InputError, PancDiffError
from ..markers import DEFAULT_TOLERANCE_MM
from ..progress import QUIET, Reporter

COHORT_COLUMNS = (
    "case", "status", "error", "ct", "overall_confidence", "fine_texture_hu", "inside_input_domain",
    "analyzed_slices", "candidate_voxels",
    "candidate_volume_ml", "peak_slice", "peak_lps_x_mm", "peak_lps_y_mm", "peak_lps_z_mm",
    "markers_hits", "markers_n", "seconds", "out",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ct", nargs="+", metavar="CT",
        help="CT as NIfTI (.nii, .nii.gz), NRRD, MHA/MHD file or a DICOM folder; several, or a .csv of them, "
        "for a cohort",
    )  # fmt: skip
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder (made atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results folder")

    g = parser.add_argument_group("pancreas")
    g.add_argument(
        "--pancreas-mask", metavar="MASK",
        help="pancreas mask file on the CT (any non-zero voxel is pancreas); default: run TotalSegmentator",
    )  # fmt: skip
    g.add_argument("--series-uid", metavar="UID", help="which series to read from a DICOM folder holding several")
    g.add_argument(
        "--totalseg-full", action="store_true",
        help="TotalSegmentator's full-resolution model (slower, finer) instead of its fast 3 mm model",
    )  # fmt: skip

    g = parser.add_argument_group("model and settings (default: the model's operating point)")
    g.add_argument("--model", metavar="DIR", help="model bundle folder (default: the bundled models)")
    g.add_argument("--scale", type=_non_negative, metavar="S", help="classifier guidance scale S (0 = no guidance)")
    g.add_argument("--noise", type=_int_in(1, 999), metavar="N", help="noise level N on the 1000-step scale")
    g.add_argument(
        "--steps", type=_int_in(1, 999), metavar="K",
        help="DDIM steps K <= N (default: the model's step size, e.g. 4 per 50 noise levels; K = N: paper-exact)",
    )  # fmt: skip
    g.add_argument("--threshold", type=_fraction, metavar="T", help="candidate threshold on the normalized map")
    g.add_argument(
        "--no-map-student", action="store_true",
        help="decode with K steps even where the model's map student fits the setting (it stands in for the "
        "decode only at the model's own S, N and K), and leave out its lesion head, which runs only with the student",
    )  # fmt: skip
    g.add_argument("--batch-size", type=_int_in(1, 100000), metavar="B", help="slices per batch (default: by memory)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="torch device (default: auto)")
    g.add_argument(
        "--encoding-cache", metavar="DIR",
        help="keep the DDIM encodings here: a rerun on the same CT and mask with the same N, K and model, "
        "whatever S or threshold, decodes only (bounded in size; an unwritable folder only warns)",
    )  # fmt: skip
    g.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)  # tests only
    add_candidate_arguments(parser)

    g = parser.add_argument_group("reference points")
    g.add_argument(
        "--markers", metavar="FILE",
        help="Slicer markups (.mrk.json, .fcsv) or CSV with x,y,z[,label][,coordinate_system]: each point's "
        "distance to the nearest candidate and hit/miss go into summary.json",
    )  # fmt: skip
    g.add_argument(
        "--markers-system", choices=("LPS", "RAS"), default="LPS", type=str.upper,
        help="coordinate system of CSV points that do not state it (default LPS, as Slicer's files and ITK)",
    )  # fmt: skip
    g.add_argument(
        "--tolerance", type=_non_negative, default=DEFAULT_TOLERANCE_MM, metavar="MM",
        help=f"a marker within this distance of a candidate is a hit (default {DEFAULT_TOLERANCE_MM:g} mm)",
    )  # fmt: skip

    g = parser.add_argument_group("cohort")
    g.add_argument("--shard", type=_shard, metavar="I/N", help="process only the I-th of N parts of the cohort")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..markers import read_markers
    from ..outputs import OutputDir

    if args.random_weights and args.model:
        raise InputError("--random-weights and --model exclude each other")
    cases = _cases(args.ct, args.pancreas_mask, args.series_uid)
    cohort = len(cases) > 1 or args.ct[0].lower().endswith(".csv") or args.shard is not None
    if cohort and args.markers:
        raise InputError("--markers is for one CT; in a cohort give each CT its markers in the CSV's markers column")
    if cohort and args.pancreas_mask:
        raise InputError(
            "--pancreas-mask is for one CT; in a cohort give each CT its mask in the CSV's pancreas_mask column"
        )
    destination = OutputDir(args.out, overwrite=args.overwrite)  # refuses before any long work
    loader = bundle_loader(args.model, args.random_weights, args.device)
    if not cohort:
        case = cases[0]
        markers = read_markers(args.markers, args.markers_system) if args.markers else None
        with destination as staging:
            summary = _detect_case(case, staging, loader, args, markers, reporter)
        args.result = {"out": str(destination.path), **_headline(summary)}
        if reporter.mode == "bar":
            print(_result_line(summary, destination.path), flush=True)
        return 0
    return _run_cohort(cases, destination, loader, args, reporter)


def bundle_loader(model: str | None, random_weights: bool, device: str | None) -> Callable:
    """A function that loads the models once, when first needed (after the input was checked)."""
    cache: list = []

    def load():
        if not cache:
            from ..weights import init_bundle, load_bundle

            if device not in (None, "auto", "cpu"):
                from ..device import resolve_device

                resolve_device(device)  # an absent GPU is an error before the models move
            cache.append(init_bundle(seed=0) if random_weights else load_bundle(model))
        return cache[0]

    return load


def add_candidate_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a candidate may be (``pancdiff.postprocess``); shared by detect and demo."""
    g = parser.add_argument_group("where candidates may be (default: the model's operating point)")
    g.add_argument(
        "--pancreas-margin", type=_non_negative, metavar="MM",
        help="heatmap, candidates and peaks only within this distance of the pancreas mask (default 5 mm)",
    )  # fmt: skip
    g.add_argument(
        "--min-anomaly", type=_non_negative, metavar="A",
        help="smoothed |x - x_hat| a candidate needs, as a fraction of the HU window (default 0.05 = 20 HU); "
        "0 = off, as in the paper, where every slice then has a candidate",
    )  # fmt: skip
    g.add_argument(
        "--edge", type=_non_negative, metavar="MM",
        help="ignore the map this close to a crop border, tile seam or air, where reconstructions fail "
        "whatever the tissue (default 3 mm)",
    )  # fmt: skip


def overrides_from(args: argparse.Namespace) -> dict:
    """DetectConfig fields the user gave; the model's operating point fills the rest."""
    return {
        "scale": args.scale,
        "noise_level": args.noise,
        "steps": args.steps,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        "device": args.device,
        "pancreas_margin_mm": getattr(args, "pancreas_margin", None),
        "min_anomaly": getattr(args, "min_anomaly", None),
        "edge_mm": getattr(args, "edge", None),
        "map_student": False if getattr(args, "no_map_student", False) else None,
    }


@dataclass(frozen=True)
class Case:
    """One CT of a run. ``mask`` None = TotalSegmentator."""

    case_id: str
    ct: Path
    mask: Path | None = None
    markers: Path | None = None
    series_uid: str | None = None


def _detect_case(case: Case, out: Path, loader, args, markers, reporter: Reporter) -> dict:
    from ..pipeline import run_detect

    markers_info = None
    if markers is not None:
        markers_info = {"file": str(case.markers or args.markers), "csv_default_system": args.markers_system}
    return run_detect(
        case.ct, out, loader,
        overrides=overrides_from(args),
        mask_source=case.mask if case.mask is not None else "totalsegmentator",
        series_uid=case.series_uid,
        totalseg_fast=not args.totalseg_full,
        markers=markers, markers_info=markers_info, tolerance_mm=args.tolerance,
        reporter=reporter, encoding_cache=args.encoding_cache,
    )  # fmt: skip


def _run_cohort(cases: list[Case], destination, loader, args, reporter: Reporter) -> int:
    from ..markers import read_markers

    if args.shard is not None:
        i, n = args.shard
        cases = cases[i - 1 :: n]
        if not cases:
            raise InputError(f"shard {i}/{n} holds no CT (the cohort has fewer than {i})")
    rows = []
    with destination as staging:
        loader()  # missing weights stop the cohort before its first CT
        reporter.stage(
            "cohort", f"{len(cases)} CTs" + (f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard else "")
        )
        with reporter.task("cohort", len(cases), unit="CT") as task:
            for case in cases:
                rows.append(_cohort_case(case, staging, loader, args, read_markers))
                reporter.event("case", **{k: rows[-1][k] for k in ("case", "status", "error", "overall_confidence")})
                task.update(1)
        failed = [r for r in rows if r["status"] != "ok"]
        if len(failed) == len(rows):
            raise InputError(f"all {len(rows)} CTs failed; first: {failed[0]['case']}: {failed[0]['error']}")
        with open(staging / "cohort_summary.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COHORT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    args.result = {"out": str(destination.path), "cases": len(rows), "failed": len(failed)}
    if failed:
        print(
            f"pancdiff: warning: {len(failed)} of {len(rows)} CTs failed; "
            f"see {destination.path / 'cohort_summary.csv'}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    if reporter.mode == "bar":
        print(f"{len(rows) - len(failed)} of {len(rows)} CTs done; results in {destination.path}", flush=True)
    return 0


def _cohort_case(case: Case, staging: Path, loader, args, read_markers) -> dict:
    """Run one CT of a cohort into its own subfolder; a bad CT becomes an error row, not an abort."""
    case_dir = staging / case.case_id
    case_dir.mkdir()
    start = time.monotonic()
    row = dict.fromkeys(COHORT_COLUMNS, "")
    row.update(case=case.case_id, ct=str(case.ct))
    try:
        markers = read_markers(case.markers, args.markers_system) if case.markers else None
        summary = _detect_case(case, case_dir, loader, args, markers, QUIET)
    except DependencyError:
        raise  # missing TotalSegmentator or GPU fails every CT the same way: stop here
    except PancDiffError as exc:
        shutil.rmtree(case_dir, ignore_errors=True)
        row.update(status="error", error=" ".join(str(exc).split()))
        return row
    peak = summary["peaks"][0] if summary["peaks"] else {}
    lps = peak.get("peak_lps_mm") or ["", "", ""]
    row.update(
        status="ok",
        overall_confidence=summary["overall_confidence"],
        fine_texture_hu=summary["input_domain"]["fine_texture_hu"],  # None: csv writes an empty cell
        inside_input_domain=summary["input_domain"]["inside"],
        analyzed_slices=summary["analyzed_slices"],
        candidate_voxels=summary["candidate_voxels"],
        candidate_volume_ml=summary["candidate_volume_ml"],
        peak_slice=peak.get("slice_index", ""),
        peak_lps_x_mm=lps[0], peak_lps_y_mm=lps[1], peak_lps_z_mm=lps[2],
        markers_hits=summary.get("markers", {}).get("hits", ""),
        markers_n=summary.get("markers", {}).get("n", ""),
        seconds=round(time.monotonic() - start, 2),
        out=case.case_id,
    )  # fmt: skip
    return row


def _cases(paths: list[str], mask: str | None, series_uid: str | None) -> list[Case]:
    """The CTs of this run: the paths given, or the rows of one CSV."""
    if len(paths) == 1 and paths[0].lower().endswith(".csv"):
        return _cases_from_csv(Path(paths[0]))
    if any(p.lower().endswith(".csv") for p in paths):
        raise InputError("give either CT paths or one cohort CSV, not both")
    ids = _unique_ids([_case_id(Path(p)) for p in paths])
    return [Case(case_id, Path(p), Path(mask) if mask else None, None, series_uid) for case_id, p in zip(ids, paths)]


def _cases_from_csv(path: Path) -> list[Case]:
    if not path.is_file():
        raise InputError(f"{path}: cohort CSV not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            if "ct" not in columns:
                raise InputError(
                    f"{path}: cohort CSV needs a 'ct' column (optional: case, pancreas_mask, markers, series_uid)"
                )
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read cohort CSV ({exc})") from None

    def cell(row: dict, name: str) -> str | None:
        value = (row.get(columns[name]) or "").strip() if name in columns else ""
        return value or None

    def resolve(value: str | None) -> Path | None:
        return None if value is None else (path.parent / value if not Path(value).is_absolute() else Path(value))

    rows = [r for r in raw if cell(r, "ct")]
    if not rows:
        raise InputError(f"{path}: cohort CSV lists no CT")
    ids = _unique_ids([cell(r, "case") or _case_id(Path(cell(r, "ct"))) for r in rows])
    return [
        Case(
            case_id,
            resolve(cell(r, "ct")),
            resolve(cell(r, "pancreas_mask")),
            resolve(cell(r, "markers")),
            cell(r, "series_uid"),
        )
        for case_id, r in zip(ids, rows)
    ]


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


def _unique_ids(ids: list[str]) -> list[str]:
    """Folder-safe, distinct case names (a second 'ct' becomes 'ct_2')."""
    out, seen = [], {}
    for raw in ids:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._") or "case"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


def _headline(summary: dict) -> dict:
    peak = summary["peaks"][0] if summary["peaks"] else None
    return {
        "overall_confidence": summary["overall_confidence"],
        "strongest_peak": peak,
        "candidate_voxels": summary["candidate_voxels"],
        "input_domain": summary["input_domain"],
        "markers": {k: summary["markers"][k] for k in ("n", "hits")} if "markers" in summary else None,
    }


def _result_line(summary: dict, out: Path) -> str:
    conf = summary["overall_confidence"]
    text = f"overall confidence {conf:.2f} (max slice tumor probability)" if conf is not None else "no slice analyzed"
    if summary["peaks"] and summary["peaks"][0]["peak_ras_mm"]:
        peak = summary["peaks"][0]
        ras = ", ".join(f"{v:.1f}" for v in peak["peak_ras_mm"])
        text += f"; strongest finding: slice {peak['slice_index']}, RAS ({ras}) mm"
    if "markers" in summary:
        text += f"; markers hit {summary['markers']['hits']}/{summary['markers']['n']}"
    warning = (summary.get("input_domain") or {}).get("warning")
    return f"{text}; results in {out}" + (f"\nWARNING: {warning}" if warning else "")


def _non_negative(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(text, float)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1), got {text}")
    return value


def _int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        value = _number(text, int)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N (e.g. 3/8), got {text!r}")
    return int(match[1]), int(match[2])
