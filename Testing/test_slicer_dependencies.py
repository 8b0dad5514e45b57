"""The dependency rules that keep a user's Slicer working (issue 10, item 3).

- MONAI is pinned to the range the networks are tested with, and torch's minimum is what the oldest
  MONAI of that range needs; pyproject.toml says the same.
- Nothing Slicer bundles (SimpleITK, numpy, vtk) and not torch is ever pip-installed by the module:
  torch only through the PyTorch extension, the others pinned to their installed versions.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancDiffSlicer"
sys.path.insert(0, str(MODULE_DIR))

from PancDiffSlicerLib import dependencies
from PancDiffSlicerLib.dependencies import NEVER_PIP_INSTALLED, Package

ALL_MISSING = [dependencies.TORCH_PACKAGE, *dependencies.ENGINE_PACKAGES, dependencies.TOTALSEGMENTATOR_PACKAGE]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;,]", requirement, maxsplit=1)[0].lower()


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_pip_is_never_asked_for_what_slicer_bundles_or_for_torch():
    plan = dependencies.installPlan(ALL_MISSING, versionOf=lambda p: None)
    protected = {n.lower() for n in NEVER_PIP_INSTALLED}
    assert plan.pipRequirements, "the rest is still installed with pip"
    assert not {_name(r) for r in plan.pipRequirements} & protected
    assert plan.torch  # through PyTorchUtils
    assert {p.distributionName for p in plan.blocked} == {"SimpleITK", "numpy"}
    assert "Slicer" in dependencies.blockedAdvice(plan.blocked)


def test_installed_bundled_packages_are_pinned_so_pip_resolves_around_them():
    installed = {"torch": "2.4.1+cu121", "numpy": "1.26.4", "SimpleITK": "2.3.1", "vtk": "0"}
    plan = dependencies.installPlan(
        [Package("monai", dependencies.MONAI_REQUIREMENT), Package("scipy", "scipy>=1.10")],
        versionOf=lambda p: installed.get(p.distributionName),
    )
    assert plan.constraints == ("SimpleITK==2.3.1", "numpy==1.26.4", "torch==2.4.1+cu121")  # vtk: no metadata
    arguments = plan.pipArguments("/tmp/c.txt")
    assert arguments == ["monai>=1.5,<1.7", "scipy>=1.10", "-c", "/tmp/c.txt"]
    assert not plan.torch and not plan.blocked


def test_nothing_to_pip_install_gives_no_pip_command():
    plan = dependencies.installPlan([dependencies.TORCH_PACKAGE], versionOf=lambda p: None)
    assert plan.torch and plan.pipArguments("/tmp/c.txt") == []


def test_monai_is_pinned_to_a_tested_range_with_an_upper_bound():
    monai = next(p for p in dependencies.ENGINE_PACKAGES if p.importName == "monai")
    assert monai.minimumVersion is not None and monai.versionBelow is not None
    assert not dependencies.isSatisfied(monai, "1.4.0")  # rejects the classifier's input_shape
    assert dependencies.isSatisfied(monai, "1.5.2") and dependencies.isSatisfied(monai, "1.6.1")
    assert not dependencies.isSatisfied(monai, "1.7.0")


def test_torch_minimum_is_what_the_oldest_allowed_monai_needs():
    monai = next(p for p in dependencies.ENGINE_PACKAGES if p.importName == "monai")
    lowest = _minor(monai.minimumVersion)
    assert dependencies.TORCH_PACKAGE.minimumVersion == dependencies.TORCH_FOR_MONAI[lowest]
    assert dependencies.pyTorchUtilsRequirement() == f">={dependencies.TORCH_FOR_MONAI[lowest]}"
    # Every MONAI minor the range allows has its torch minimum recorded.
    low, high = dependencies.versionTuple(monai.minimumVersion), dependencies.versionTuple(monai.versionBelow)
    for major, minor in ((low[0], m) for m in range(low[1], high[1])):
        assert f"{major}.{minor}" in dependencies.TORCH_FOR_MONAI


def test_installed_monai_is_in_range_and_needs_the_torch_we_recorded():
    """Checked against the real package metadata of the MONAI the tests run with."""
    try:
        version = importlib.metadata.version("monai")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("monai is not installed")
    monai = next(p for p in dependencies.ENGINE_PACKAGES if p.importName == "monai")
    assert dependencies.isSatisfied(monai, version), f"the tests run with monai {version}, outside {monai.requirement}"
    torchRequirement = next(
        r for r in importlib.metadata.requires("monai") if _name(r) == "torch" and "extra" not in r
    )
    needed = re.search(r">=\s*([0-9.]+)", torchRequirement).group(1)
    assert dependencies.versionTuple(needed) == dependencies.versionTuple(dependencies.TORCH_FOR_MONAI[_minor(version)])
    assert dependencies.versionTuple(importlib.metadata.version("torch")) >= dependencies.versionTuple(needed)


def test_pyproject_declares_the_same_requirements():
    text = (MODULE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.DOTALL | re.MULTILINE).group(1)
    declared = {re.sub(r"\s", "", d) for d in re.findall(r'^\s*"([^"]+)"', block, re.MULTILINE)}
    ours = {p.requirement for p in (dependencies.TORCH_PACKAGE, *dependencies.ENGINE_PACKAGES)}
    assert declared == ours


def test_module_installs_through_the_plan_and_pytorchutils_only():
    """The module's installer: no pip_install outside the plan, torch through PyTorchUtils."""
    source = (MODULE_DIR / "PancDiffSlicer.py").read_text(encoding="utf-8")
    calls = re.findall(r"slicer\.util\.pip_install\((.*?)\)\n", source)
    assert calls == ["plan.pipArguments(constraintsFile)"]
    assert "torchVersionRequirement=dependencies.pyTorchUtilsRequirement()" in source
