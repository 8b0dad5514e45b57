"""MSD Task07 slices, the slice-folder writer, and simulated lesions, on a small phantom dataset."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from engine_support import TINY_NETWORK
from pancdiff.config import PreprocessConfig
from pancdiff.datasets.msd import (
    list_msd_cases,
    load_msd_crops,
    load_msd_slices,
    split_msd_cases,
    write_slice_folder,
)
from pancdiff.datasets.simulated import write_simulated_folder
from pancdiff.datasets.slice_folder import load_slice_image, read_manifest
from pancdiff.errors import InputError
from pancdiff.phantom import PhantomConfig, write_phantom_dataset
from pancdiff.train import TrainConfig, _Batches, load_slice_data, train

SMALL = PhantomConfig(shape=(14, 80, 80), spacing=(2.4, 2.4, 3.0))
CFG = PreprocessConfig(image_size=48, pixel_spacing_mm=1.5, support_mm=64.0)


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    return write_phantom_dataset(
        tmp_path_factory.mktemp("msd") / "Task07", cases=4, seed=3, tumor_fraction=0.5, cfg=SMALL
    )


@pytest.fixture(scope="module")
def items(msd):
    return load_msd_slices(msd, CFG)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_tumor_slices_carry_their_masks_and_healthy_ones_none(msd, items):
    tumor_cases = set(json.loads((msd / "dataset.json").read_text())["tumor_cases"])
    assert len(tumor_cases) == 2
    tumors = [i for i in items if i.tumor]
    healthy = [i for i in items if not i.tumor]
    assert tumors and healthy
    assert {i.case for i in tumors} == tumor_cases
    for item in tumors:
        assert item.mask.any() and not (item.mask & ~item.valid).any()
    for item in healthy:
        assert not item.mask.any()
    assert len({i.name for i in items}) == len(items)


def test_tumor_mask_on_the_canvas_sits_on_the_tumor_tissue(msd, items):
    # Where the canvas mask lies, the canvas must show the tumor's own HU (its slice mean in the
    # volume, windowed): a mask shifted or mirrored would sit on fat, bowel or pancreas instead.
    cases = {c.case: c for c in list_msd_cases(msd)}
    checked = 0
    for item in (i for i in items if i.tumor and i.mask.sum() >= 15):
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[item.case].image)))[item.slice_index]
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[item.case].label)))[item.slice_index]
        expected = np.clip((hu[labels == 2].mean() + 150) / 400, 0, 1)
        pancreas = np.clip((hu[labels == 1].mean() + 150) / 400, 0, 1)
        assert abs(item.canvas[item.mask].mean() - expected) < 0.04
        assert item.canvas[item.mask].mean() < pancreas  # hypodense
        checked += 1
    assert checked >= 2


def test_slices_are_labelled_from_the_label_volume(msd, items):
    case = list_msd_cases(msd)[0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    own = [i for i in items if i.case == case.case]
    assert {i.slice_index for i in own} == set(np.flatnonzero((labels > 0).any(axis=(1, 2))).tolist())
    tumor_slices = set(np.flatnonzero((labels == 2).any(axis=(1, 2))).tolist())
    assert {i.slice_index for i in own if i.tumor} <= tumor_slices


def test_paper_filter_drops_low_contrast_tumor_slices(tmp_path):
    faint = PhantomConfig(shape=(14, 80, 80), spacing=(2.4, 2.4, 3.0), tumor_contrast_hu=(4.0, 6.0))
    strong = PhantomConfig(shape=(14, 80, 80), spacing=(2.4, 2.4, 3.0), tumor_contrast_hu=(110.0, 120.0))
    for cfg, kept in ((faint, False), (strong, True)):
        root = write_phantom_dataset(tmp_path / f"kept_{kept}", cases=2, seed=5, tumor_fraction=1.0, cfg=cfg)
        unfiltered = load_msd_slices(root, CFG)
        filtered = load_msd_slices(root, CFG, paper_filter=True)
        assert sum(i.tumor for i in unfiltered) > 0
        n_tumor = sum(i.tumor for i in filtered)
        assert (n_tumor > 0) is kept
        assert sum(not i.tumor for i in filtered) > 0  # healthy slices stay


def test_split_is_90_10_by_case_without_overlap():
    cases = [f"pancreas_{i:03d}" for i in range(40)] * 3  # several slices per case
    train, val = split_msd_cases(cases, seed=1)
    assert len(val) == 4 and len(train) == 36
    assert not set(train) & set(val)
    assert split_msd_cases(cases, seed=1) == (train, val)
    assert split_msd_cases(cases, seed=2) != (train, val)


@pytest.mark.parametrize("image_format", ["npy", "png"])
def test_slice_folder_round_trips_through_the_reader(tmp_path, items, image_format):
    out = write_slice_folder(items, tmp_path / "slices", image_format=image_format)
    records = read_manifest(out)
    assert len(records) == len(items)
    for record, item in zip(records, items):
        assert (record.case, record.tumor) == (item.case, item.tumor)
        np.testing.assert_allclose(
            load_slice_image(record.path), item.canvas, atol=1 / 65535 if image_format == "png" else 0
        )
        np.testing.assert_array_equal(load_slice_image(record.mask) > 0.5, item.mask)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_slice_folder_writer_refuses_a_non_empty_folder_and_writes_nothing(tmp_path, items):
    (tmp_path / "slices").mkdir()
    (tmp_path / "slices" / "keep.txt").write_text("mine")
    before = _files(tmp_path)
    with pytest.raises(InputError, match="not an empty folder"):
        write_slice_folder(items, tmp_path / "slices")
    with pytest.raises(InputError, match="no slices"):
        write_slice_folder([], tmp_path / "other")
    assert _files(tmp_path) == before


def test_not_an_msd_folder_and_missing_files_are_refused(tmp_path, msd):
    with pytest.raises(InputError, match="not an MSD Task07 folder"):
        load_msd_slices(tmp_path, CFG)
    broken = tmp_path / "broken"
    shutil.copytree(msd, broken)
    (broken / "labelsTr" / "phantom_001.nii.gz").unlink()
    with pytest.raises(InputError, match="phantom_001.nii.gz: listed in .* but missing"):
        list_msd_cases(broken)
    with pytest.raises(InputError, match="not in the dataset: nope"):
        load_msd_slices(msd, CFG, cases=["nope"])


def test_crops_are_pancreas_boxes_at_the_requested_spacing(msd):
    organs: list = []
    records, images = load_msd_crops(msd, CFG, spacing_mm=0.8, cases=["phantom_000"], organs=organs)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(list_msd_cases(msd)[0].label)))
    assert len(records) == len(images) == len(organs) == int((labels > 0).any(axis=(1, 2)).sum())
    for image, organ in zip(images, organs):
        assert organ.shape == image.shape and organ.any(), "the pancreas of each crop comes along"
    for image in images:
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    # A crop spans the pancreas box: 2.4 mm voxels resampled to 0.8 mm -> 3x the voxel count.
    z = int(np.flatnonzero((labels > 0).any(axis=(1, 2)))[0])
    rows = np.flatnonzero((labels[z] > 0).any(axis=1))
    assert images[0].shape[0] == pytest.approx(3 * (rows[-1] - rows[0] + 1), abs=1)


def test_simulated_folder_has_lesions_with_masks_on_darker_pixels(tmp_path, items):
    healthy = [i for i in items if not i.tumor]
    out = write_simulated_folder(healthy, tmp_path / "sim", spacing_mm=CFG.pixel_spacing_mm, paired=True, seed=0)
    records = read_manifest(out)
    lesions = [r for r in records if r.tumor]
    assert lesions and len(records) == len(healthy) + len(lesions)
    by_name = {r.path.stem: r for r in records}
    for record in lesions:
        clean = load_slice_image(by_name[record.path.stem.removesuffix("_lesion")].path)
        image, mask = load_slice_image(record.path), load_slice_image(record.mask) > 0.5
        assert mask.any()
        assert (image[mask] < clean[mask]).mean() > 0.9  # the mask is where the lesion darkened
        assert (image <= clean + 1e-6).all()  # a lesion only darkens
    # From a slice folder on disk too, reproducibly.
    folder = write_slice_folder(healthy, tmp_path / "healthy")
    a = read_manifest(write_simulated_folder(folder, tmp_path / "a", spacing_mm=1.5, seed=7))
    b = read_manifest(write_simulated_folder(folder, tmp_path / "b", spacing_mm=1.5, seed=7))
    assert [r.tumor for r in a] == [r.tumor for r in b] and 0 < sum(r.tumor for r in a) < len(a)


def test_task07_trains_with_same_site_negatives_in_the_real_slots(msd, tmp_path):
    """A Task07 tumor patient also has slices without tumor: the split keeps the patient on one side
    (it refused such folders before), and those slices are the real healthy slots, negatives from the
    same site (and patients) as the tumors, which pancreas-tc cannot offer."""
    cfg = TrainConfig(batch_size=8, paired=True, real_fraction=0.5, val_fraction=0.25, preprocess=CFG)
    data = load_slice_data(msd, cfg)
    assert not set(data.train_cases) & set(data.val_cases)
    records, _ = load_msd_crops(msd, CFG, spacing_mm=cfg.assumed_spacing_mm)
    train_records = [r for r in records if r.case in set(data.train_cases)]
    assert len(train_records) == len(data.train)
    batches = _Batches(data.train, cfg, "classifier", np.random.default_rng(0))
    tumor_cases = {r.case for r in train_records if r.tumor}
    negative_cases = {train_records[i].case for i in batches.real_pools[0]}
    assert tumor_cases and negative_cases & tumor_cases, "tumor patients give real negatives"
    _, y, zone = batches.next(0)
    assert y.tolist()[-4:] == [0, 1, 0, 1] and bool(zone[-4:].flatten(1).any(1).all())
    network = dataclasses.replace(TINY_NETWORK, image_size=CFG.image_size)
    run = dataclasses.replace(cfg, iterations=2, validate_every=2, checkpoint_every=2, threads=1, network=network)
    assert train("classifier", msd, tmp_path / "run", run).is_file()
