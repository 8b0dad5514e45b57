"""What GPU the device choice would use, described for the user without importing torch.

``nvidia-smi`` answers in milliseconds and works before PyTorch is installed; importing torch in
Slicer's process just to show a label would cost seconds. Pure Python: no ``slicer``, no Qt.
"""

from __future__ import annotations

import platform as platformModule
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memoryMiB: int | None = None

    def describe(self) -> str:
        return self.name if self.memoryMiB is None else f"{self.name}, {self.memoryMiB / 1024:.0f} GiB"


def _runNvidiaSmi() -> str | None:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        completed = subprocess.run(
            [executable, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def findGpus(
    nvidiaSmi: Callable[[], str | None] = _runNvidiaSmi,
    platform: str = sys.platform,
    machine: str | None = None,
) -> list[GpuInfo]:
    """The GPUs PyTorch could use: NVIDIA cards from ``nvidia-smi``, or Apple silicon's MPS."""
    gpus = []
    for line in (nvidiaSmi() or "").splitlines():
        name, _, memory = line.partition(",")
        if name.strip():
            memory = memory.strip()
            gpus.append(GpuInfo(name.strip(), int(float(memory)) if memory.replace(".", "", 1).isdigit() else None))
    machine = machine if machine is not None else platformModule.machine()
    if not gpus and platform == "darwin" and machine == "arm64":
        gpus.append(GpuInfo("Apple silicon GPU (MPS)"))
    return gpus


def describeDeviceChoice(device: str, gpus: list[GpuInfo]) -> str:
    """One line under the device selector: what "auto", "gpu" or "cpu" will run on."""
    if device == "cpu":
        return "CPU: slower (minutes per CT), works everywhere."
    if gpus:
        more = f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else ""
        return f"GPU: {gpus[0].describe()}{more}"
    if device == "gpu":
        return "No GPU found: Detect will fail on GPU. Choose Auto or CPU."
    return "No GPU found: Auto will run on the CPU (slower)."
