"""Atomic output folders: all of a run's results appear at once, or nothing does."""

from __future__ import annotations

import pytest
from pancdiff.errors import InputError
from pancdiff.outputs import OutputDir


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_results_appear_only_when_the_run_ends(tmp_path):
    out = tmp_path / "out"
    with OutputDir(out) as staging:
        (staging / "summary.json").write_text("{}")
        assert not out.exists()
    assert _names(out) == ["summary.json"]
    assert _names(tmp_path) == ["out"]


def test_a_failed_run_leaves_nothing_not_even_new_parent_folders(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyboardInterrupt), OutputDir(out) as staging:
        (staging / "heatmap.nii.gz").write_bytes(b"half")
        raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_a_failed_rerun_keeps_the_previous_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("old")
    with pytest.raises(RuntimeError), OutputDir(out, overwrite=True) as staging:
        (staging / "summary.json").write_text("new")
        raise RuntimeError("boom")
    assert (out / "summary.json").read_text() == "old"
    assert _names(tmp_path) == ["out"]


def test_overwrite_replaces_previous_results_whole(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("old")
    (out / "report.png").write_text("old")
    with OutputDir(out, overwrite=True) as staging:
        (staging / "summary.json").write_text("new")
    assert _names(out) == ["summary.json"] and (out / "summary.json").read_text() == "new"
    assert _names(tmp_path) == ["out"]


def test_existing_results_need_overwrite_and_foreign_folders_are_never_replaced(tmp_path):
    results, foreign, empty = tmp_path / "results", tmp_path / "foreign", tmp_path / "empty"
    for folder in (results, foreign, empty):
        folder.mkdir()
    (results / "cohort_summary.csv").write_text("x")
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="--overwrite"):
        OutputDir(results)
    with pytest.raises(InputError, match="no PancDiff results"):
        OutputDir(foreign, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        OutputDir(tmp_path / "file")
    with OutputDir(empty) as staging:  # an empty folder is fine: nothing to lose
        (staging / "summary.json").write_text("{}")
    assert _names(empty) == ["summary.json"]


def test_text_files_are_utf8_whatever_the_process_locale(tmp_path):
    """Writing a DICOM slice through SimpleITK/GDCM (as ``test_ctio`` does to build series) leaves the
    process in the C locale, where ``open()`` without an encoding is ASCII: a manifest or a results
    table with a non-ASCII character would then fail mid-run. Any library may do the same."""
    import locale

    from pancdiff.datasets.slice_folder import read_manifest

    (tmp_path / "manifest.csv").write_text("file,case,tumor\na.png,Müller_01,0\n", encoding="utf-8")
    previous = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C")
        assert read_manifest(tmp_path)[0].case == "Müller_01"
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
