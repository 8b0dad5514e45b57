"""Shared by the ``test_cli_*`` files: run ``python -m pancdiff`` as a user would, and small CTs.

The synthetic CT is deliberately awkward: oblique direction (rotated and with a flipped axis),
anisotropic voxels and a non-zero origin, so geometry bugs cannot hide behind identity matrices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
# Untrained nets, 2 DDIM steps: a pipeline test. No evidence floor: an untrained net at N = 20 changes
# a slice too little to pass it, and these tests check where maps land, not what they find.
FAST = ["--random-weights", "--steps", "2", "--noise", "20", "--min-anomaly", "0"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONPATH"] = str(REPO / "PancDiffSlicer") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pancdiff(*args: str | Path, timeout: float = 240) -> Run:
    """``python -m pancdiff ARGS`` in a subprocess; returns exit code and both streams."""
    proc = subprocess.run(
        [sys.executable, "-m", "pancdiff", *map(str, args)],
        check=False, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
        env=cli_env(), cwd=REPO,
    )  # fmt: skip
    return Run(proc.returncode, proc.stdout, proc.stderr)


def oblique_direction(degrees: float = 12.0) -> tuple[float, ...]:
    """A rotation about the axial axis, with the first axis flipped (like many NIfTI files)."""
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return tuple((rot @ np.diag([-1.0, 1.0, 1.0])).ravel())


GEOMETRY = {"spacing": (1.3, 1.1, 2.5), "origin": (41.5, -17.25, 88.0), "direction": oblique_direction()}


def image_like(array_zyx: np.ndarray, geometry: dict = GEOMETRY) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    return image


def synthetic_ct(shape_zyx: tuple[int, int, int] = (7, 44, 48), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, pancreas bool), both (z, y, x): air, a soft-tissue body, a brighter pancreas blob.

    The pancreas spans slices 1..5 so slices 0 and 6 are never analyzed.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]].astype(float)
    cy, cx = (shape_zyx[1] - 1) / 2, (shape_zyx[2] - 1) / 2
    body = ((y - cy) / (0.45 * shape_zyx[1])) ** 2 + ((x - cx) / (0.45 * shape_zyx[2])) ** 2 <= 1.0
    pancreas = (((y - cy) / 7.0) ** 2 + ((x - cx) / 11.0) ** 2 + ((z - 3.0) / 2.2) ** 2) <= 1.0
    hu = np.full(shape_zyx, -1000.0)
    hu[body] = 40.0
    hu[pancreas] = 100.0
    hu += rng.normal(0, 12, size=shape_zyx)
    return np.rint(hu).astype(np.int16), pancreas


def synthetic_volume(seed: int = 0):
    """``synthetic_ct`` as a read CT (``pancdiff.ctio.CTVolume``, 1.3 x 1.1 x 2.5 mm) and its pancreas mask."""
    from pancdiff.ctio import CTVolume

    hu, pancreas = synthetic_ct(seed=seed)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((1.3, 1.1, 2.5))
    return CTVolume(image, hu, Path("synthetic")), pancreas


def write_case(folder: Path, name: str = "ct", seed: int = 0) -> tuple[Path, Path]:
    """Write ``<name>.nii.gz`` and ``<name>_pancreas.nii.gz``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    hu, pancreas = synthetic_ct(seed=seed)
    ct_path, mask_path = folder / f"{name}.nii.gz", folder / f"{name}_pancreas.nii.gz"
    sitk.WriteImage(image_like(hu), str(ct_path))
    sitk.WriteImage(image_like(pancreas.astype(np.uint8)), str(mask_path))
    return ct_path, mask_path


def leftovers(out: Path) -> list[str]:
    """What a run left in ``out``'s parent under ``out``'s name (the folder or a staging folder)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))
