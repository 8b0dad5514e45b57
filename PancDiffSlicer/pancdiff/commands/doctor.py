"""Print what PancDiff runs on: Python, torch and its devices (CUDA, MPS, GPU memory), MONAI,
SimpleITK, TotalSegmentator and its weights, and the bundled models with their SHA-256 checked
against the model card. Paste the output into a bug report. It always reports every piece, then
exits 3 when PancDiff cannot run a detection: the bundled models are missing or fail their SHA-256,
or torch cannot be imported; otherwise 0 (a missing TotalSegmentator is optional).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

from .. import __version__
from ..progress import Reporter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    report = collect()
    args.result = {"doctor": report}
    if args.json:
        print(json.dumps(report, indent=2))
    elif reporter.mode == "json":
        reporter.event("info", message="doctor", doctor=report)
    else:
        print(format_report(report))
    if report["problems"]:
        # One line per blocking problem on stderr, so a script sees why the exit code is 3.
        for problem in report["problems"]:
            print(f"pancdiff doctor: {problem}", file=sys.stderr)
        return 3
    return 0


def problems(report: dict) -> list[str]:
    """What stops a detection from running: a broken torch, missing or corrupt bundled models."""
    found = []
    if report["torch"].get("version") is None:
        found.append(f"torch cannot be imported ({report['torch'].get('error')})")
    models = report["models"]
    if "error" in models:
        found.append(f"{models['folder']}: {models['error']}; reinstall PancDiff or pass --model DIR to detect")
    for f in models["files"]:
        if f["status"] != "ok":
            found.append(f"{models['folder']}/{f['file']}: {f['status']}; reinstall PancDiff")
    return found


def collect() -> dict:
    """Everything the report shows, as a JSON-ready dict."""
    report = {
        "pancdiff": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "torch": _torch(),
        "packages": {name: _version(name) for name in ("monai", "SimpleITK", "numpy", "scipy", "safetensors")},
        "totalsegmentator": _totalsegmentator(),
        "models": _models(),
    }
    report["problems"] = problems(report)
    return report


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch() -> dict:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install is exactly what doctor must report
        return {"version": None, "error": f"{type(exc).__name__}: {exc}"}
    info: dict = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "threads": torch.get_num_threads(),
        "gpus": [],
    }
    if info["cuda_available"]:
        for n in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(n)
            gpu = {"index": n, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
            try:
                free, _ = torch.cuda.mem_get_info(n)
                gpu["free_gib"] = round(free / 2**30, 1)
            except RuntimeError:
                pass
            info["gpus"].append(gpu)
    return info


def _totalsegmentator() -> dict:
    """Installed? And are its weights where it looks (TOTALSEG_HOME_DIR, else ~/.totalsegmentator)?"""
    home = Path(os.environ.get("TOTALSEG_HOME_DIR") or Path.home() / ".totalsegmentator")
    results = home / "nnunet" / "results"
    datasets = sorted(p.name for p in results.glob("Dataset*")) if results.is_dir() else []
    return {
        "version": _version("TotalSegmentator"),
        "home": str(home),
        "home_from": "TOTALSEG_HOME_DIR" if os.environ.get("TOTALSEG_HOME_DIR") else "default",
        "weights": datasets,
    }


def _models() -> dict:
    """The bundled model card and each weight file's SHA-256, recomputed and compared.

    Works without torch (``pancdiff.weights`` needs it): doctor must still report the bundle there.
    """
    from ..resources import bundled_model_dir

    try:
        from ..weights import CARD_FILE, CLASSIFIER_FILE, UNET_FILE, sha256_file

        required = (UNET_FILE, CLASSIFIER_FILE)
    except ImportError:  # no torch: check every file the card lists
        CARD_FILE, required = "model.json", ()

        def sha256_file(path: Path) -> str:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    root = bundled_model_dir()
    out: dict = {"folder": str(root), "model_id": None, "files": []}
    card_path = root / CARD_FILE
    if not card_path.is_file():
        out["error"] = f"no {CARD_FILE}: no bundled models"
        return out
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        out["error"] = f"{CARD_FILE} unreadable: {exc}"
        return out
    out["model_id"] = card.get("model_id")
    out["operating_point"] = card.get("operating_point")
    recorded_hashes = card.get("sha256") or {}
    unrecorded = [name for name in required if name not in recorded_hashes]
    if unrecorded:
        out["error"] = f"{CARD_FILE} records no SHA-256 for {', '.join(unrecorded)}"
    for name, recorded in sorted(recorded_hashes.items()):
        path = root / name
        actual = sha256_file(path) if path.is_file() else None
        out["files"].append(
            {
                "file": name,
                "bytes": path.stat().st_size if path.is_file() else None,
                "sha256": actual,
                "status": "missing" if actual is None else ("ok" if actual == recorded else "SHA-256 MISMATCH"),
            }
        )
    return out


def format_report(r: dict) -> str:
    """The report as aligned text lines."""
    t = r["torch"]
    lines = [
        f"pancdiff          {r['pancdiff']}",
        f"python            {r['python']}",
        f"platform          {r['platform']}",
    ]
    if t.get("version") is None:
        lines.append(f"torch             NOT IMPORTABLE ({t.get('error')})")
    else:
        build = f"CUDA {t['cuda_build']} build" if t["cuda_build"] else "CPU build"
        lines += [
            f"torch             {t['version']} ({build}, {t['threads']} CPU threads)",
            f"CUDA available    {'yes' if t['cuda_available'] else 'no'}",
            f"MPS available     {'yes' if t['mps_available'] else 'no'}",
        ]
        for gpu in t["gpus"]:
            free = f", {gpu['free_gib']} GiB free" if "free_gib" in gpu else ""
            lines.append(f"GPU {gpu['index']}             {gpu['name']}, {gpu['memory_gib']} GiB{free}")
    for name, version in r["packages"].items():
        lines.append(f"{name:<17} {version or 'NOT INSTALLED'}")
    ts = r["totalsegmentator"]
    if ts["version"]:
        lines.append(f"TotalSegmentator  {ts['version']}")
    else:
        lines.append(
            'TotalSegmentator  not installed (bash scripts/setup.sh --with-totalsegmentator, or give --pancreas-mask)'
        )
    weights = (
        ", ".join(ts["weights"]) if ts["weights"] else "none found (totalseg_download_weights, or TOTALSEG_HOME_DIR)"
    )
    lines.append(f"  weights in      {ts['home']} ({ts['home_from']}): {weights}")
    m = r["models"]
    lines.append(f"bundled models    {m['folder']}")
    if "error" in m:
        lines.append(f"  {m['error']} (reinstall PancDiff, or pancdiff detect --model DIR)")
    if m["model_id"] is not None:
        lines.append(f"  model id        {m['model_id']}")
        for f in m["files"]:
            lines.append(f"  {f['file']:<24} {f['status']:<8} sha256 {f['sha256'] or '-'}")
        op = m.get("operating_point") or {}
        if op:
            lines.append(
                f"  operating point S={op.get('scale')} N={op.get('noise_level')} K={op.get('steps')} "
                f"threshold={op.get('threshold')}"
            )
    lines.append("status            " + ("OK" if not r.get("problems") else f"{len(r['problems'])} PROBLEM(S), exit 3"))
    return "\n".join(lines)
