"""The engine finds its bundled models and sample CT in every layout it is installed in (issue 10, item 1).

- the Slicer extension as its CMake installs it: only the files ``PancDiffSlicer/CMakeLists.txt``
  lists, copied into ``lib/Slicer-X.Y/qt-scripted-modules`` of a temporary folder, run exactly as
  the module runs the engine (``python -m pancdiff detect`` with that folder as working directory);
- a wheel (built from the sdist, as pip does) installed into a fresh virtual environment, where
  ``pancdiff doctor`` and ``pancdiff demo`` must work, and doctor must fail on a broken bundle.

No repository path is ever on the engine's path in these runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from slicer_layout import MODULE_DIR, build_installed_layout

REPO = MODULE_DIR.parent
sys.path.insert(0, str(MODULE_DIR))

from PancDiffSlicerLib import contract  # noqa: E402

SAMPLE = MODULE_DIR / "Resources" / "SampleData"
CARD = json.loads((MODULE_DIR / "Resources" / "Models" / "model.json").read_text(encoding="utf-8"))


def _env() -> dict[str, str]:
    """The test process's environment without any path that reaches the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


# -- the Slicer extension's installed layout ----------------------------------------------------


@pytest.fixture(scope="module")
def installedModule(tmp_path_factory) -> Path:
    return build_installed_layout(tmp_path_factory.mktemp("Slicer-install"))


def test_installed_layout_holds_the_models_and_sample_data(installedModule):
    for relative in ("PancDiffSlicer.py", "pancdiff/cli.py", "Resources/Models/model.json",
                     "Resources/Models/unet.safetensors", "Resources/Models/classifier.safetensors",
                     "Resources/SampleData/example_ct_sm.nii.gz", "Resources/SampleData/pancreas.nii.gz"):
        assert (installedModule / relative).is_file(), f"CMake does not install {relative}"
    probe = _run([sys.executable, "-c", "import pancdiff.weights as w; print(w.bundled_model_dir())"], installedModule)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == installedModule / "Resources" / "Models"


def test_detection_runs_from_the_installed_layout_with_the_bundled_models(installedModule, tmp_path):
    """The module's own command line (contract.detectCommandLine), from the installed folder."""
    settings = contract.DetectionSettings(device=contract.Device.CPU, pancreasSource=contract.PancreasSource.LABELMAP)
    command = contract.detectCommandLine(
        sys.executable, SAMPLE / "example_ct_sm.nii.gz", tmp_path / "out", settings, SAMPLE / "pancreas.nii.gz"
    )
    command[command.index("--steps") + 1] = "2"  # the bundled models, 2 DDIM steps: minutes -> seconds
    completed = _run(command, installedModule)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert contract.parseEventLine(completed.stdout.splitlines()[-1]).kind == "done"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model_id"] == CARD["model_id"]
    assert summary["model"]["sha256"] == CARD["sha256"]
    assert not summary["model"]["untrained"]


def test_installed_layout_without_the_models_stops_with_exit_code_3(tmp_path):
    """What the extension did before the models moved into the module: the check above can fail."""
    module = build_installed_layout(tmp_path / "install")
    shutil.rmtree(module / "Resources" / "Models")
    settings = contract.DetectionSettings(device=contract.Device.CPU, pancreasSource=contract.PancreasSource.LABELMAP)
    command = contract.detectCommandLine(
        sys.executable, SAMPLE / "example_ct_sm.nii.gz", tmp_path / "out", settings, SAMPLE / "pancreas.nii.gz"
    )
    completed = _run(command, module)
    assert completed.returncode == 3, completed.stderr[-2000:]
    assert str(module / "Resources" / "Models") in completed.stderr


# -- a wheel in a fresh virtual environment ------------------------------------------------------


def _sourceCopy(target: Path) -> Path:
    """The tracked files of the checkout (what an sdist is built from), without .venv or build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for relative in listed:
        source = REPO / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


def _build(kind: str, source: Path, out: Path) -> Path:
    """``setuptools.build_meta.build_<kind>`` in a child, as a PEP 517 frontend would call it."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out / completed.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheelVenv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from the sdist; torch & co. come from the test's own environment."""
    root = tmp_path_factory.mktemp("wheel")
    sdist = _build("sdist", _sourceCopy(root / "src"), root / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked")
    (unpacked,) = (root / "unpacked").iterdir()
    wheel = _build("wheel", unpacked, root / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("pancdiff/_bundle/Models/model.json", "pancdiff/_bundle/Models/unet.safetensors",
                     "pancdiff/_bundle/SampleData/example_ct_sm.nii.gz", "pancdiff/_bundle/SampleData/pancreas.nii.gz"):
        assert required in names, f"{required} missing from {wheel.name}"
    engine = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "pancdiff").rglob("*.py")}
    assert not engine - set(names), f"engine modules missing from the wheel: {engine - set(names)}"

    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
    if os.name == "nt":
        sitePackages = venv / "Lib" / "site-packages"
    else:
        sitePackages = next((venv / "lib").glob("python3*/site-packages"))
    # The dependencies (torch, monai, ...) as installed here, appended after the venv's own packages:
    # a plain path entry, so the development install of pancdiff there is never imported.
    dependencies = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (sitePackages / "zz_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _pancdiff(venv: Path) -> str:
    return str(venv / ("Scripts/pancdiff.exe" if os.name == "nt" else "bin/pancdiff"))


def _bundle(venv: Path) -> Path:
    probe = _run([str(venv / "bin" / "python"), "-c", "import pancdiff.weights as w; print(w.bundled_model_dir())"],
                 venv)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    return Path(probe.stdout.strip())


def test_wheel_installs_the_bundle_and_doctor_passes(wheelVenv):
    bundle = _bundle(wheelVenv)
    assert wheelVenv in bundle.parents and bundle.parts[-3:] == ("pancdiff", "_bundle", "Models")
    completed = _run([_pancdiff(wheelVenv), "doctor", "--json"], wheelVenv)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["models"]["folder"] == str(bundle)
    assert report["models"]["model_id"] == CARD["model_id"] and report["problems"] == []
    assert {f["status"] for f in report["models"]["files"]} == {"ok"}


def test_doctor_exits_3_on_a_corrupted_then_missing_bundle(wheelVenv, tmp_path):
    bundle = _bundle(wheelVenv)
    backup = tmp_path / "backup"
    shutil.copytree(bundle, backup)
    try:
        with open(bundle / "unet.safetensors", "ab") as f:
            f.write(b"\0")
        corrupted = _run([_pancdiff(wheelVenv), "doctor"], wheelVenv)
        assert corrupted.returncode == 3
        assert "unet.safetensors: SHA-256 MISMATCH" in corrupted.stderr
        (bundle / "model.json").unlink()
        missing = _run([_pancdiff(wheelVenv), "doctor"], wheelVenv)
        assert missing.returncode == 3 and "no model.json" in missing.stderr
    finally:
        shutil.rmtree(bundle)
        shutil.copytree(backup, bundle)


def test_demo_runs_from_the_wheel_with_the_bundled_models_and_sample_ct(wheelVenv, tmp_path):
    completed = _run(
        [_pancdiff(wheelVenv), "demo", "--out", str(tmp_path / "demo"), "--steps", "2", "--device", "cpu", "--quiet"],
        tmp_path,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert (tmp_path / "demo" / "with_lesion" / "report.png").is_file()
    assert CARD["model_id"] in json.dumps(summary) or CARD["model_id"] in (
        tmp_path / "demo" / "with_lesion" / "summary.json"
    ).read_text()
