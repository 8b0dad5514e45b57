"""Atomic output folders: a run either leaves its complete results or nothing at all.

Everything is written into a hidden temporary folder *beside* the destination (same filesystem, so
the final move is a rename), and moved into place only when the run succeeded. A cancelled or failed
run removes the temporary folder, so a reader (a person, a cohort script, the Slicer module) never
sees half a result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from .errors import InputError

# A folder holding one of these was written by PancDiff, so --overwrite may replace it whole.
RESULT_MARKERS = ("summary.json", "cohort_summary.csv", "demo_summary.json")


class OutputDir:
    """A destination folder filled atomically.

    Usage::

        with OutputDir(out, overwrite=args.overwrite) as staging:
            write(staging / "heatmap.nii.gz")
        # here ``out`` holds everything, or (on an exception) is untouched

    The destination is checked when the object is made, before any long work: an existing folder
    with files is refused unless ``overwrite`` is set, and even then only if it holds PancDiff
    results (so ``--out ~ --overwrite`` cannot wipe a home folder).

    Args:
        path: the destination folder.
        overwrite: replace an existing PancDiff result folder.

    Raises:
        InputError: the destination is a file, or holds results and ``overwrite`` is not set, or
            holds files PancDiff did not write.
    """

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.path = Path(path).absolute()
        self.overwrite = overwrite
        self.staging: Path | None = None
        self._made_parents: list[Path] = []
        check_destination(self.path, overwrite)

    def __enter__(self) -> Path:
        missing = [p for p in self.path.parents if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made_parents = missing  # removed again if the run fails: it leaves nothing at all
        # mkdir (not mkdtemp, which makes it private): the results get the user's usual permissions
        self.staging = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        self.staging.mkdir()
        return self.staging

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.staging is not None
        if exc_type is not None:
            self._roll_back()
            return
        try:
            self._commit()
        except BaseException:
            self._roll_back()
            raise

    def _roll_back(self) -> None:
        assert self.staging is not None
        shutil.rmtree(self.staging, ignore_errors=True)
        for parent in self._made_parents:  # innermost first
            try:
                parent.rmdir()
            except OSError:
                break

    def _commit(self) -> None:
        """Move the staging folder into place; an old result folder is swapped out, then removed."""
        assert self.staging is not None
        check_destination(self.path, self.overwrite)  # it may have changed during a long run
        old = None
        if self.path.exists():
            if any(self.path.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
                os.replace(self.path, old / "previous")
            else:
                self.path.rmdir()
        os.replace(self.staging, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_destination(path: Path, overwrite: bool) -> None:
    """Refuse a destination that must not be replaced (see ``OutputDir``)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; choose another --out")
    entries = [p.name for p in path.iterdir()]
    if not entries:
        return
    ours = any(name in entries for name in RESULT_MARKERS)
    if not ours:
        raise InputError(f"{path}: folder is not empty and holds no PancDiff results; choose another --out")
    if not overwrite:
        raise InputError(f"{path}: already holds results; pass --overwrite to replace them or choose another --out")


__all__ = ["RESULT_MARKERS", "OutputDir", "check_destination"]
