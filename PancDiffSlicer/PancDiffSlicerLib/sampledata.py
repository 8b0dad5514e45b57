"""The sample CT and its pancreas label shipped in ``Resources/SampleData``, as Slicer SampleData sources.

Registered at startup, they appear in the Sample Data module under *PancDiff*; SampleData checks each
file's SHA-256 when it fetches it (here from the module's own folder: no download). The self-test
loads them the same way. Pure Python: the registration call itself is made by the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CATEGORY = "PancDiff"


@dataclass(frozen=True)
class SampleFile:
    sampleName: str
    fileName: str
    nodeName: str
    sha256: str
    labelmap: bool = False


SAMPLES = (
    SampleFile(
        "PancDiffSampleCT", "example_ct_sm.nii.gz", "PancDiff sample CT",
        "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb",
    ),
    SampleFile(
        "PancDiffSamplePancreas", "pancreas.nii.gz", "PancDiff sample pancreas",
        "96502b81069680e8a6ec45b18b2338e98c91defe2c9ff548a9d71d4353aa1e6c", labelmap=True,
    ),
)  # fmt: skip


def sampleDataDir(moduleDir: str | Path) -> Path:
    return Path(moduleDir) / "Resources" / "SampleData"


def registrationArguments(moduleDir: str | Path, thumbnail: str | Path | None = None) -> list[dict]:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource``, one per sample."""
    folder = sampleDataDir(moduleDir)
    return [
        {
            "category": CATEGORY,
            "sampleName": sample.sampleName,
            "uris": [(folder / sample.fileName).resolve().as_uri()],
            "fileNames": [sample.fileName],
            "nodeNames": [sample.nodeName],
            "checksums": [f"SHA256:{sample.sha256}"],
            "loadFileType": "VolumeFile",
            "loadFileProperties": {"labelmap": True} if sample.labelmap else {},
            "thumbnailFileName": None if thumbnail is None else str(thumbnail),
        }
        for sample in SAMPLES
    ]
