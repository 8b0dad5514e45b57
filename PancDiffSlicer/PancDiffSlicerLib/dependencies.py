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

# MONAI: the networks are tested with 1.5.x and 1.6.x (1.4.0 rejects the classifier's ``input_shape``
# when the weights load). The torch each MONAI release needs (its Requires-Dist); 1.6 also needs
# Python >= 3.10, so Slicer 5.8 (Python 3.9) gets 1.5.x, which needs torch >= 2.4.1.
MONAI_REQUIREMENT = "monai>=1.5,<1.7"
TORCH_FOR_MONAI = {"1.5": "2.4.1", "1.6": "2.8.0"}
TORCH_REQUIREMENT = "torch>=2.4.1"  # what the oldest MONAI in MONAI_REQUIREMENT needs

# Never installed or upgraded with pip by PancDiff (after SlicerTotalSegmentator's skip list):
# Slicer ships SimpleITK, numpy and VTK, and replacing them breaks Slicer; torch comes only from the
# PyTorch extension (PyTorchUtils), which picks the build that fits the GPU driver.
SLICER_BUNDLED = ("SimpleITK", "numpy", "vtk")
NEVER_PIP_INSTALLED = (*SLICER_BUNDLED, "torch")


@dataclass(frozen=True)
class Package:
    """A Python package: the name to import, the pip requirement, and the distribution name."""

    importName: str
    requirement: str

    @property
    def distributionName(self) -> str:
        return re.split(r"[<>=!~\[ ;,]", self.requirement, maxsplit=1)[0]

    @property
    def minimumVersion(self) -> str | None:
        match = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", self.requirement)
        return match.group(1) if match else None

    @property
    def versionBelow(self) -> str | None:
        """The exclusive upper bound (``<X``), if any."""
        match = re.search(r"<\s*([0-9][0-9A-Za-z.]*)", self.requirement)
        return match.group(1) if match else None

    @property
    def pipInstallable(self) -> bool:
        """False for what Slicer bundles and for torch (see ``NEVER_PIP_INSTALLED``)."""
        return self.distributionName.lower() not in {name.lower() for name in NEVER_PIP_INSTALLED}


# The engine's runtime dependencies without torch (kept equal to pyproject.toml by a test).
# Slicer already ships numpy and SimpleITK; they are listed so a stripped Python is caught too, but
# they are never pip-installed (``Package.pipInstallable``).
ENGINE_PACKAGES = (
    Package("monai", MONAI_REQUIREMENT),
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
    if version == "0":
        return True
    if package.minimumVersion is not None and versionTuple(version) < versionTuple(package.minimumVersion):
        return False
    return package.versionBelow is None or versionTuple(version) < versionTuple(package.versionBelow)


def missingPackages(
    needTotalSegmentator: bool = False,
    versionOf: Callable[[Package], str | None] = installedVersion,
) -> list[Package]:
    """Packages (torch first, when missing) that must be installed before Detect can run."""
    wanted = [TORCH_PACKAGE, *ENGINE_PACKAGES]
    if needTotalSegmentator:
        wanted.append(TOTALSEGMENTATOR_PACKAGE)
    return [package for package in wanted if not isSatisfied(package, versionOf(package))]


@dataclass(frozen=True)
class InstallPlan:
    """How the missing packages get installed, without touching what Slicer bundles.

    torch: install PyTorch through the PyTorch extension first.
    pipArguments: ``pip install`` arguments (requirements, then ``-c`` constraints), or [] for none.
    constraints: lines of the constraints file: each bundled package pinned to its installed version,
        so pip resolves around them (an older release of a dependency) instead of replacing them.
    blocked: bundled packages that are missing or too old; pip must not fix those: use a newer Slicer.
    """

    torch: bool
    pipRequirements: tuple[str, ...]
    constraints: tuple[str, ...]
    blocked: tuple[Package, ...]

    def pipArguments(self, constraintsFile: str) -> list[str]:
        if not self.pipRequirements:
            return []
        return [*self.pipRequirements, "-c", constraintsFile] if self.constraints else list(self.pipRequirements)


def installPlan(missing: list[Package], versionOf: Callable[[Package], str | None] = installedVersion) -> InstallPlan:
    """Split ``missing`` into PyTorchUtils / pip / impossible, and pin what must not move."""
    constraints = []
    for name in NEVER_PIP_INSTALLED:
        version = versionOf(Package(name, name))
        if version and version != "0":
            constraints.append(f"{name}=={version}")
    return InstallPlan(
        torch=TORCH_PACKAGE in missing,
        pipRequirements=tuple(p.requirement for p in missing if p.pipInstallable),
        constraints=tuple(constraints),
        blocked=tuple(p for p in missing if not p.pipInstallable and p != TORCH_PACKAGE),
    )


def pyTorchUtilsRequirement() -> str:
    """What the PyTorch extension is asked for (``installTorch(torchVersionRequirement=...)``)."""
    return f">={TORCH_PACKAGE.minimumVersion}"


def blockedAdvice(blocked: tuple[Package, ...] | list[Package]) -> str:
    names = ", ".join(p.requirement for p in blocked)
    return (
        f"PancDiff needs {names}, which Slicer itself provides; installing it with pip would break Slicer. "
        "Use Slicer 5.8 or newer (a fresh install if this one was modified)."
    )


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
