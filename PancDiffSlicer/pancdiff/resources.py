"""Where the bundled models and sample data are, in every layout, relative to this package only.

- checkout / editable install / Slicer "Additional module paths": ``PancDiffSlicer/Resources``
  beside the ``pancdiff`` package;
- Slicer extension as CMake installs it: ``qt-scripted-modules/Resources`` beside
  ``qt-scripted-modules/pancdiff`` (the module's RESOURCES keep their relative paths);
- wheel / sdist (``pip install .``): ``pancdiff/_bundle``, the same folder as package data.

Never the repository root or the working directory.
"""

from __future__ import annotations

from pathlib import Path

BUNDLE_PACKAGE_DIR = "_bundle"


def resources_dir() -> Path:
    """The folder holding ``Models/`` and ``SampleData/`` for this copy of the engine.

    Returns the first layout that exists; if none does, the module layout (so an error message names
    the place the files were expected).
    """
    here = Path(__file__).resolve().parent
    candidates = (here / BUNDLE_PACKAGE_DIR, here.parent / "Resources")
    for folder in candidates:
        if (folder / "Models").is_dir() or (folder / "SampleData").is_dir():
            return folder
    return candidates[1]


def bundled_model_dir() -> Path:
    """The models shipped with this copy of the engine (``Resources/Models``)."""
    return resources_dir() / "Models"


def sample_data_dir() -> Path:
    """The sample CT and its pancreas label shipped with this copy (``Resources/SampleData``)."""
    return resources_dir() / "SampleData"
