"""The synthetic CT phantom: a CT in HU with plausible anatomy on the right sides, in the MSD layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pancdiff.cli import main
from pancdiff.ctio import read_ct
from pancdiff.errors import InputError
from pancdiff.phantom import PhantomConfig, make_phantom, write_phantom_dataset
from pancdiff.preprocess import Reorientation


@pytest.fixture(scope="module")
def tumor_case():
    return make_phantom(np.random.default_rng(11), PhantomConfig(), tumor=True)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_dataset_has_msd_layout_and_the_requested_tumor_share(tmp_path):
    root = write_phantom_dataset(tmp_path / "ph", cases=5, seed=2, tumor_fraction=0.4)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "pancreas", "2": "cancer"}
    assert meta["numTraining"] == 5 and len(meta["training"]) == 5
    assert len(meta["tumor_cases"]) == 2
    for entry in meta["training"]:
        case = Path(entry["image"]).name.removesuffix(".nii.gz")
        ct = read_ct(root / entry["image"])  # passes the HU check
        labels = sitk.ReadImage(str(root / entry["label"]))
        assert ct.image.GetSize() == labels.GetSize() == (128, 128, 24)
        values = set(np.unique(sitk.GetArrayFromImage(labels)).tolist())
        assert values == ({0, 1, 2} if case in meta["tumor_cases"] else {0, 1})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_geometry_is_non_trivial(tumor_case):
    ct, labels = tumor_case
    assert np.abs(ct.GetOrigin()).min() > 1.0
    assert ct.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # stored RAS, like NIfTI
    assert ct.GetSpacing() == (1.5, 1.5, 3.0)
    assert labels.GetOrigin() == ct.GetOrigin() and labels.GetDirection() == ct.GetDirection()
    assert ct.GetPixelID() == sitk.sitkInt16


def test_intensities_are_abdominal_hu_with_a_hypodense_tumor(tumor_case):
    ct, labels = tumor_case
    hu, lab = sitk.GetArrayFromImage(ct).astype(float), sitk.GetArrayFromImage(labels)
    assert (hu <= -900).mean() > 0.1  # air around the body
    assert ((hu > -130) & (hu < -60)).mean() > 0.05  # fat
    assert (hu > 400).any()  # bone
    pancreas, tumor = np.median(hu[lab == 1]), np.median(hu[lab == 2])
    assert 40 <= pancreas <= 130
    assert 15 <= pancreas - tumor <= 70
    assert np.flatnonzero((lab > 0).any(axis=(1, 2))).size >= 5  # spans several slices


def test_anatomy_is_on_the_right_sides(tumor_case):
    ct, labels = tumor_case
    reo = Reorientation.from_image(ct)
    hu = reo.apply(sitk.GetArrayFromImage(ct)).astype(float)  # (S, P, L)
    lab = reo.apply(sitk.GetArrayFromImage(labels))
    _, ny, nx = hu.shape
    bone = np.argwhere(hu > 500)
    assert bone[:, 1].mean() > ny / 2  # spine is posterior
    z, _, x = np.nonzero(lab > 0)
    head, tail = x < np.percentile(x, 15), x > np.percentile(x, 85)
    assert z[tail].mean() > z[head].mean()  # the tail (patient left) lies higher than the head
    liver_side = hu[:, ny // 3 : 2 * ny // 3, : nx // 4]  # patient right
    spleen_side = hu[:, ny // 3 : 2 * ny // 3, 3 * nx // 4 :]
    assert ((liver_side > 45) & (liver_side < 80)).mean() > ((spleen_side > 45) & (spleen_side < 80)).mean()


def test_tissue_has_smooth_texture_not_flat_shapes(tumor_case):
    ct, _ = tumor_case
    hu = sitk.GetArrayFromImage(ct).astype(float)
    region = hu[:, 50:80, 50:80]
    soft = (region > 0) & (region < 150)
    assert 5 < region[soft].std() < 80
    # Neighbouring voxels correlate (smooth texture), unlike pure white noise.
    a, b = region[:, :, :-1], region[:, :, 1:]
    both = soft[:, :, :-1] & soft[:, :, 1:]
    assert np.corrcoef(a[both], b[both])[0, 1] > 0.3


def test_same_seed_same_phantom():
    a = sitk.GetArrayFromImage(make_phantom(np.random.default_rng(5), tumor=True)[0])
    b = sitk.GetArrayFromImage(make_phantom(np.random.default_rng(5), tumor=True)[0])
    c = sitk.GetArrayFromImage(make_phantom(np.random.default_rng(6), tumor=True)[0])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_arguments_are_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("mine")
    before = _files(tmp_path)
    with pytest.raises(InputError, match="not an empty folder"):
        write_phantom_dataset(tmp_path / "taken", cases=1)
    with pytest.raises(InputError, match="tumor fraction"):
        write_phantom_dataset(tmp_path / "new", cases=1, tumor_fraction=1.5)
    with pytest.raises(InputError, match="cases"):
        write_phantom_dataset(tmp_path / "new", cases=0)
    assert _files(tmp_path) == before


def test_command_line_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "phantoms"
    args = ["phantom", "--out", str(out), "--cases", "2", "--size", "64", "--slices", "8", "--seed", "1"]
    assert main([*args, "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "done" and lines[-1]["cases"] == 2
    assert sitk.ReadImage(str(out / "imagesTr" / "phantom_001.nii.gz")).GetSize() == (64, 64, 8)
    before = _files(tmp_path)
    assert main([*args, "-q"]) == 2  # the folder is taken now
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "x"), "--tumor-fraction", "2", "-q"]) == 2
    assert _files(tmp_path) == before


def test_storage_orientation_changes_the_file_not_the_anatomy():
    lps = PhantomConfig(shape=(8, 48, 40), spacing=(4.0, 3.5, 5.0), direction=tuple(np.eye(3).ravel()))
    permuted = PhantomConfig(
        shape=(8, 48, 40), spacing=(4.0, 3.5, 5.0), direction=(0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    )
    a, _ = make_phantom(np.random.default_rng(2), lps)
    b, _ = make_phantom(np.random.default_rng(2), permuted)
    assert a.GetSize() == (40, 48, 8) and b.GetSize() == (48, 8, 40)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.DICOMOrient(b, "LPS")), sitk.GetArrayFromImage(a))
    np.testing.assert_allclose(sitk.DICOMOrient(b, "LPS").GetOrigin(), a.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(sitk.DICOMOrient(b, "LPS").GetSpacing(), a.GetSpacing())
