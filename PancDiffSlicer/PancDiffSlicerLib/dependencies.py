"""Which Python packages the engine needs in Slicer's Python, and which of them are missing.

Pure Python: no ``slicer``, no Qt, nothing imported or installed here. The module asks once
(listing what ``missingPackages`` returns), installs PyTorch through the PyTorch extension and the
rest with ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass

TORCH_REQUIREMENT = "torch>=2.2"


@dataclass(frozen=True)
class Package:
    """A Python package: the name to import, the pip requirement, and the distribution name."""

    importName: str
    requirement: str

    @property
    def distributionName(self) -> str:
        return re.split(r"[<>=!~\[ ;]", self.requirement, maxsplit=1)[0]

    @property
    def minimumVersion(self) -> str | None:
        match = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", self.requirement)
        return match.group(1) if match else None


# The engine's runtime dependencies without torch (kept equal to pyproject.toml by a test).
# Slicer already ships numpy and SimpleITK; they are listed so a stripped Python is caught too.
ENGINE_PACKAGES = (
    Package("monai", "monai>=1.4"),
    Package("einops", "einops"),
    Package("SimpleITK", "SimpleITK>=2.3"),
    Package("safetensors", "safetensors>=0.4"),
    Package("numpy", "numpy>=1.24"),
    Package("scipy", "scipy>=1.10"),
    Package("PIL", "pillow>=10"),
    Package("matplotlib", "matplotlib>=3.7"),
    Package("tqdm", "tqdm>=4.60"),
)
TOTALSEGMENTATOR_PACKAGE = Package("totalsegmentator", "TotalSegmentator>=2.4")
TORCH_PACKAGE = Package("torch", TORCH_REQUIREMENT)


def versionTuple(version: str) -> tuple[int, ...]:
    """Leading numeric components of a version string: "2.4.1+cu121" -> (2, 4, 1)."""
    parts = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def installedVersion(package: Package) -> str | None:
    """The installed distribution's version, or None when it is not installed."""
    if importlib.util.find_spec(package.importName) is None:
        return None
    try:
        return importlib.metadata.version(package.distributionName)
    except importlib.metadata.PackageNotFoundError:
        return "0"  # importable but without metadata (e.g. a source checkout): accept it


def isSatisfied(package: Package, version: str | None) -> bool:
    if version is None:
        return False
    if package.minimumVersion is None or version == "0":
        return True
    return versionTuple(version) >= versionTuple(package.minimumVersion)


def missingPackages(
    needTotalSegmentator: bool = False,
    versionOf: Callable[[Package], str | None] = installedVersion,
) -> list[Package]:
    """Packages (torch first, when missing) that must be installed before Detect can run."""
    wanted = [TORCH_PACKAGE, *ENGINE_PACKAGES]
    if needTotalSegmentator:
        wanted.append(TOTALSEGMENTATOR_PACKAGE)
    return [package for package in wanted if not isSatisfied(package, versionOf(package))]


def confirmationText(missing: list[Package]) -> str:
    """The one question asked before installing anything."""
    lines = [
        f"  - {p.requirement}" + (" (through the PyTorch extension)" if p == TORCH_PACKAGE else "") for p in missing
    ]
    return (
        "PancDiff needs these Python packages in Slicer's Python:\n"
        + "\n".join(lines)
        + "\n\nInstall them now? This downloads several hundred MB and can take a few minutes; "
        "Slicer may look busy meanwhile."
    )


def installAdvice(package: Package, error: BaseException | str) -> str:
    """What to tell the user when installing ``package`` failed."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
    if package == TORCH_PACKAGE:
        return (
            f"Installing PyTorch failed ({reason}). Open the 'PyTorch Utils' module (PyTorch extension), "
            "install PyTorch there, restart Slicer and click Detect again."
        )
    return (
        f"Installing {package.requirement} failed ({reason}). Check the internet connection (or proxy), then run "
        f"in Slicer's Python console:\n  slicer.util.pip_install('{package.requirement}')\n"
        "and restart Slicer. Behind a firewall, ask IT to allow pypi.org and files.pythonhosted.org."
    )
