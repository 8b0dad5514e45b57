"""Plain-Python helpers of the Slicer module: the CLI contract, dependency checks, GPU description."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancDiffSlicer"
sys.path.insert(0, str(MODULE_DIR))

from PancDiffSlicerLib import contract, dependencies, devices
from PancDiffSlicerLib.contract import DetectionSettings, Device, PancreasSource, Quality


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_command_line_for_a_given_mask():
    settings = DetectionSettings(
        guidanceScale=4.5, noiseLevel=250, threshold=0.4, device=Device.CPU, pancreasSource=PancreasSource.LABELMAP
    )
    command = contract.detectCommandLine("/slicer/PythonSlicer", "/tmp/ct.nrrd", "/tmp/out", settings, "/tmp/m.nii.gz")
    assert command[:5] == ["/slicer/PythonSlicer", "-m", "pancdiff", "detect", "/tmp/ct.nrrd"]
    assert _option(command, "--pancreas-mask") == "/tmp/m.nii.gz" and _option(command, "--out") == "/tmp/out"
    # fast keeps the model's step size (its K at its N) at any N
    k, n = contract.FAST_STEPS, contract.FAST_NOISE
    assert (_option(command, "--scale"), _option(command, "--noise")) == ("4.5", "250")
    assert _option(command, "--steps") == str(math.ceil(k * 250 / n))
    assert DetectionSettings(noiseLevel=n).steps == k and DetectionSettings(noiseLevel=2 * n).steps == 2 * k
    assert (_option(command, "--threshold"), _option(command, "--device")) == ("0.4", "cpu")
    assert _option(command, "--progress") == "json"
    assert "--totalseg-full" not in command and "--batch-size" not in command and "--encoding-cache" not in command


def test_command_line_names_the_encoding_cache_when_given():
    command = contract.detectCommandLine("python", "ct", "out", DetectionSettings(), encodingCacheDir="/tmp/enc")
    assert _option(command, "--encoding-cache") == "/tmp/enc"


def test_command_line_for_totalsegmentator_full_paper_exact_on_gpu():
    settings = DetectionSettings(
        noiseLevel=200,
        quality=Quality.PAPER_EXACT,
        device=Device.GPU,
        pancreasSource=PancreasSource.TOTALSEGMENTATOR_FULL,
        batchSize=4,
    )
    command = contract.detectCommandLine("python", "ct.nrrd", "out", settings, platform="linux")
    assert "--pancreas-mask" not in command and "--totalseg-full" in command
    assert _option(command, "--steps") == "200" and _option(command, "--device") == "cuda"
    assert _option(command, "--batch-size") == "4"
    fast = contract.detectCommandLine("python", "ct.nrrd", "out", DetectionSettings(), platform="darwin")
    assert "--totalseg-full" not in fast and _option(fast, "--device") == "auto"
    gpuOnMac = contract.detectCommandLine(
        "python", "ct", "out", DetectionSettings(device=Device.GPU), platform="darwin"
    )
    assert _option(gpuOnMac, "--device") == "mps"


def test_command_line_matches_the_engines_detect_options():
    detect = MODULE_DIR / "pancdiff" / "commands" / "detect.py"
    if not detect.exists():
        pytest.skip("engine's detect command not present")
    engineOptions = set(re.findall(r'add_argument\(\s*"(--[a-z-]+)"', detect.read_text(encoding="utf-8")))
    settings = DetectionSettings(pancreasSource=PancreasSource.TOTALSEGMENTATOR_FULL, batchSize=2)
    used = {a for a in contract.detectCommandLine("python", "ct", "out", settings, encodingCacheDir="enc")}
    used = {a for a in used if a.startswith("--")}
    used |= {a for a in contract.detectCommandLine("python", "ct", "out", settings, "mask") if a.startswith("--")}
    progressIsGlobal = "--progress" in (MODULE_DIR / "pancdiff" / "cli.py").read_text(encoding="utf-8")
    assert used - engineOptions - ({"--progress"} if progressIsGlobal else set()) == set()


@pytest.mark.parametrize(
    "bad",
    [
        {"guidanceScale": -1},
        {"guidanceScale": 21},
        {"noiseLevel": 9},
        {"noiseLevel": 601},
        {"threshold": 0.01},
        {"threshold": 0.99},
        {"batchSize": -1},
    ],
)
def test_settings_are_validated_at_the_edge(bad):
    with pytest.raises(ValueError):
        DetectionSettings(**bad)


def test_rerun_key_changes_with_s_n_quality_and_source_but_not_threshold():
    base = DetectionSettings()
    assert DetectionSettings(threshold=0.8).rerunKey() == base.rerunKey()
    for changed in (
        {"guidanceScale": 3.0},
        {"noiseLevel": 400},
        {"quality": Quality.PAPER_EXACT},
        {"pancreasSource": PancreasSource.LABELMAP},
    ):
        assert DetectionSettings(**changed).rerunKey() != base.rerunKey(), changed


def test_progress_lines_parse_to_events_and_other_lines_to_log():
    event = contract.parseEventLine(
        '{"event": "progress", "stage": "detect", "done": 3, "total": 12, '
        '"elapsed_s": 4.5, "eta_s": 13.5, "loss": 0.1}\n'
    )
    assert (event.kind, event.stage, event.done, event.total) == ("progress", "detect", 3, 12)
    assert event.fraction == 0.25 and event.etaSeconds == 13.5 and event.elapsedSeconds == 4.5
    assert (
        contract.parseEventLine('{"event": "progress", "stage": "x", "done": 0, "total": 5, "eta_s": null}').etaSeconds
        is None
    )
    error = contract.parseEventLine('{"event": "error", "message": "ct.nrrd: not a CT", "exit_code": 2}')
    assert (error.kind, error.message, error.exitCode) == ("error", "ct.nrrd: not a CT", 2)
    for line in ("Traceback (most recent call last):", "{not json", '{"no_event": 1}', "[1, 2]"):
        assert contract.parseEventLine(line).kind == "log"


def test_progress_description_says_stage_and_time_left():
    from PancDiffSlicerLib.job import JobProgress, humanReadableDuration

    assert humanReadableDuration(42) == "42 s" and humanReadableDuration(135) == "2 min 15 s"
    assert humanReadableDuration(3 * 3600 + 120) == "3 h 02 min"
    text = JobProgress(stage="detect", message="40 slices", fraction=0.5, etaSeconds=75).describe()
    assert text == "Detect: 40 slices (about 1 min 15 s left)"


def test_slices_csv_parsed_by_column_name_in_any_order(tmp_path):
    path = tmp_path / "slices.csv"
    path.write_text(
        "map_max,extra,peak_lps_x_mm,peak_lps_y_mm,peak_lps_z_mm,slice_index,tumor_probability,"
        "peak_i,peak_j,peak_k\n"
        "0.9,x,10.0,-20.0,30.0,7,0.75,1,2,7\n"
        "0.0,y,,,,8,0.05,,,\n"
    )
    first, second = contract.readSliceRows(path)
    assert (first.sliceIndex, first.tumorProbability, first.mapMax) == (7, 0.75, 0.9)
    assert first.peakRas == (-10.0, 20.0, 30.0) and first.peakIjk == (1, 2, 7)
    assert second.peakRas is None and second.peakIjk is None


def test_slices_csv_prefers_ras_columns_and_reads_the_provisional_xyz(tmp_path):
    path = tmp_path / "slices.csv"
    path.write_text(
        "slice_index,tumor_probability,map_max,peak_lps_x_mm,peak_lps_y_mm,peak_lps_z_mm,"
        "peak_ras_x_mm,peak_ras_y_mm,peak_ras_z_mm\n3,0.5,0.5,1,2,3,-1,-2,3\n"
    )
    assert contract.readSliceRows(path)[0].peakRas == (-1.0, -2.0, 3.0)
    path.write_text("slice_index,tumor_probability,map_max,peak_x,peak_y,peak_z\n3,0.5,0.5,1,2,3\n")
    assert contract.readSliceRows(path)[0].peakRas == (-1.0, -2.0, 3.0)


def test_summary_confidence_and_peaks_in_ras(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(
        json.dumps(
            {
                "overall_confidence": 0.8,
                "model_id": "m1",
                "settings": {},
                "peaks": [
                    {"peak_lps_mm": [1, 2, 3]},
                    {"peak_ras_mm": [4, 5, 6]},
                    {"position_lps": [7, 8, 9]},
                    {"value": 1},
                ],
            }
        )
    )
    summary = contract.readSummary(path)
    assert summary.confidence == 0.8 and summary.modelId == "m1"
    assert summary.peaksRas == [(-1.0, -2.0, 3.0), (4.0, 5.0, 6.0), (-7.0, -8.0, 9.0)]
    path.write_text(json.dumps({"overall_confidence": None, "peaks": []}))
    assert math.isnan(contract.readSummary(path).confidence)
    path.write_text(json.dumps({"confidence": 0.3, "model": {"model_id": "bundle-7"}}))
    assert contract.readSummary(path).confidence == 0.3 and contract.readSummary(path).modelId == "bundle-7"


def test_tabular_outputs_written_for_self_tests_read_back(tmp_path):
    rows = [contract.SliceRow(4, 0.6, 0.9, None, (1.0, 2.0, 3.0))]
    contract.writeTabularOutputs(tmp_path, 0.6, rows)
    assert contract.readSliceRows(tmp_path / contract.SLICES_FILE) == rows
    assert contract.readSummary(tmp_path / contract.SUMMARY_FILE).confidence == 0.6


def test_enum_labels_exist_for_the_combo_boxes():
    for enumType in (PancreasSource, Device, Quality):
        labels = [member.label() for member in enumType]
        assert all(labels) and len(set(labels)) == len(labels)


# -- dependencies --------------------------------------------------------------------------------


def test_missing_packages_are_found_and_torch_comes_first():
    installed = {
        "torch": "2.5.1+cpu",
        "monai": "1.3.0",
        "einops": "0.8.0",
        "SimpleITK": "2.4.0",
        "safetensors": "0.4.5",
        "numpy": "1.26.4",
        "scipy": "1.13.0",
        "PIL": "10.4.0",
        "matplotlib": "3.9.0",
        "tqdm": "4.66.0",
    }
    missing = dependencies.missingPackages(versionOf=lambda p: installed.get(p.importName))
    assert [p.requirement for p in missing] == ["monai>=1.5,<1.7"]  # too old counts as missing
    installed["monai"] = "1.7.0"
    missing = dependencies.missingPackages(versionOf=lambda p: installed.get(p.importName))
    assert [p.requirement for p in missing] == ["monai>=1.5,<1.7"]  # so does one newer than tested
    installed.pop("torch")
    installed["monai"] = "1.5.2"
    missing = dependencies.missingPackages(needTotalSegmentator=True, versionOf=lambda p: installed.get(p.importName))
    assert [p.importName for p in missing] == ["torch", "totalsegmentator"]
    text = dependencies.confirmationText(missing)
    assert "torch>=2.4.1" in text and "PyTorch extension" in text and "TotalSegmentator>=2.4" in text


def test_engine_packages_match_the_projects_dependencies():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((MODULE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {re.sub(r"\s", "", d) for d in pyproject["project"]["dependencies"]}
    declaredNames = {re.split(r"[<>=!~\[;]", d)[0].lower() for d in declared}
    ours = {p.requirement for p in (dependencies.TORCH_PACKAGE, *dependencies.ENGINE_PACKAGES)}
    ourNames = {p.distributionName.lower() for p in (dependencies.TORCH_PACKAGE, *dependencies.ENGINE_PACKAGES)}
    assert ourNames == declaredNames
    assert ours == declared


def test_version_comparison_and_advice():
    assert dependencies.versionTuple("2.4.1+cu121") == (2, 4, 1)
    assert dependencies.isSatisfied(dependencies.Package("x", "x>=1.10"), "1.9.9") is False
    assert dependencies.isSatisfied(dependencies.Package("x", "x>=1.10"), "1.10") is True
    assert dependencies.isSatisfied(dependencies.Package("x", "x"), "0.1") is True
    assert dependencies.installedVersion(dependencies.Package("surely_not_installed_pkg", "nope")) is None
    advice = dependencies.installAdvice(dependencies.Package("monai", "monai>=1.4"), OSError("proxy refused"))
    assert "proxy refused" in advice and "slicer.util.pip_install('monai>=1.4')" in advice
    assert "PyTorch Utils" in dependencies.installAdvice(dependencies.TORCH_PACKAGE, "no wheel")


# -- devices -------------------------------------------------------------------------------------


def test_gpus_described_from_nvidia_smi():
    gpus = devices.findGpus(lambda: "NVIDIA H100 80GB HBM3, 81559\nNVIDIA RTX A2000, 6138\n", platform="linux")
    assert [g.describe() for g in gpus] == ["NVIDIA H100 80GB HBM3, 80 GiB", "NVIDIA RTX A2000, 6 GiB"]
    assert devices.describeDeviceChoice("auto", gpus) == "GPU: NVIDIA H100 80GB HBM3, 80 GiB (+1 more)"
    assert devices.describeDeviceChoice("cpu", gpus).startswith("CPU")


def test_no_gpu_explained_per_choice():
    assert devices.findGpus(lambda: None, platform="linux") == []
    assert "No GPU" in devices.describeDeviceChoice("gpu", []) and "CPU" in devices.describeDeviceChoice("auto", [])
    mac = devices.findGpus(lambda: None, platform="darwin", machine="arm64")
    assert mac and "MPS" in mac[0].name
