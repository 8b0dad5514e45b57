"""Training writes what it promises, resumes exactly, and fights the crop-size confound."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.config import PreprocessConfig
from pancdiff.crop_samples import NO_AUGMENT, AugmentConfig, CropSampler
from pancdiff.datasets.slice_folder import load_slice_image, read_manifest
from pancdiff.errors import InputError
from pancdiff.train import (
    TrainConfig,
    _Batches,
    _WorkerBatches,
    config_from_json,
    contrast_at,
    learning_rate,
    load_slice_data,
    sample_timesteps,
    train,
)
from safetensors.torch import load_file
from scipy import ndimage

TINY = TrainConfig(
    iterations=4,
    batch_size=4,
    checkpoint_every=2,
    validate_every=4,
    warmup=1,
    network=TINY_NETWORK,
    threads=1,
    lesion_fraction=0.5,
    val_fraction=0.25,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_slice_folder(tmp_path_factory.mktemp("tc"))


@pytest.mark.parametrize("kind", ["diffusion", "classifier"])
def test_training_writes_weights_logs_split_and_checkpoint(folder, tmp_path, kind):
    weights = train(kind, folder, tmp_path / kind, TINY)
    out = tmp_path / kind
    assert weights == out / f"{kind}.safetensors" and load_file(str(weights))
    for name in ("train_config.json", "split.json", "loss.csv", "validation.csv", "checkpoint/state.json"):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train_cases"]) & set(split["val_cases"])
    assert {c.split("_")[0] for c in split["val_cases"]} == {"healthy", "tumor"}


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(folder, tmp_path):
    cfg = dataclasses.replace(TINY, iterations=4, checkpoint_every=2)
    whole = load_file(str(train("diffusion", folder, tmp_path / "whole", cfg)))
    train("diffusion", folder, tmp_path / "split", dataclasses.replace(cfg, iterations=2))
    resumed = load_file(str(train("diffusion", folder, tmp_path / "split", cfg, resume=True)))
    assert json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())["step"] == 4
    for key, value in whole.items():
        assert (value == resumed[key]).all(), key


def test_config_file_rejects_unknown_settings(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"iterations": 3, "network": {"channels": [8, 16, 16]}}))
    cfg = config_from_json(path)
    assert cfg.iterations == 3 and cfg.network.channels == (8, 16, 16)
    path.write_text(json.dumps({"iteration": 3}))
    with pytest.raises(InputError, match="iteration"):
        config_from_json(path)


def test_the_cut_is_blind_to_the_label(folder):
    """The same crop labelled tumor or healthy becomes the same canvas: preprocessing cannot leak it."""
    records = read_manifest(folder)
    images = [load_slice_image(r.path) for r in records]
    for aug in (NO_AUGMENT, AugmentConfig()):
        as_healthy = CropSampler(images, [0] * len(images), PreprocessConfig())
        as_tumor = CropSampler(images, [1] * len(images), PreprocessConfig())
        for i in range(len(images)):
            a = as_healthy.canvas(i, np.random.default_rng(i), aug)
            b = as_tumor.canvas(i, np.random.default_rng(i), aug)
            assert np.array_equal(a.x, b.x) and np.array_equal(a.valid, b.valid)


def test_the_field_is_centred_on_the_pancreas():
    image = np.full((120, 120), 0.4, np.float32)
    organ = np.zeros_like(image, bool)
    organ[80:100, 10:40] = True
    c = CropSampler([image], [0], PreprocessConfig(support_mm=40.0), 1.0, [organ]).canvas(0, np.random.default_rng(0))
    assert c.organ is not None and c.organ.sum() == pytest.approx(organ.sum(), rel=0.1)


def test_paired_batches_differ_only_by_a_lesion_inside_the_pancreas(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", with_labels=True)
    cfg = dataclasses.replace(TINY, paired=True, batch_size=6, augment=NO_AUGMENT)
    data = load_slice_data(folder, cfg)
    batches = _Batches(data.train, cfg, "classifier", np.random.default_rng(0))
    x, y, zone = batches.next(0)
    assert y.tolist() == [0, 1] * 3
    diff = (x[0::2] - x[1::2]).abs()[:, 0].numpy()
    assert (diff.reshape(3, -1).max(1) > 0.1).all(), "each pair carries a conspicuous lesion at step 0"
    assert zone.dtype == torch.bool and torch.equal(zone[0::2], zone[1::2]), "a pair shares its pancreas zone"
    for d, z in zip(diff, zone[0::2, 0].numpy()):  # the lesion core lies in the zone, the zone is not everything
        assert z[d > 0.5 * d.max()].all() and 0 < z.mean() < 1
    organs = [o for o in data.train.organs if o is not None]
    assert organs, "the synthetic folder carries organ labels"


def test_data_workers_build_reproducible_paired_batches_and_train(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", with_labels=True)
    cfg = dataclasses.replace(TINY, paired=True, batch_size=6, augment=NO_AUGMENT, data_workers=2)
    data = load_slice_data(folder, cfg)

    def first_batches(start):
        stream = _WorkerBatches(data.train, cfg, "classifier", (0, 0), start)
        return [stream.next() for _ in range(3)]

    a, b, other = first_batches(0), first_batches(0), first_batches(7)
    for (xa, ya, za), (xb, _, zb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(za, zb), "same seed, same workers: same batches"
        assert ya.tolist() == [0, 1] * 3 and torch.equal(za[0::2], za[1::2])
        assert ((xa[0::2] - xa[1::2]).abs().flatten(1).max(1).values > 0.1).all(), "each pair has its lesion"
    assert not torch.equal(a[0][0], a[1][0]), "the two workers draw different crops"
    assert not torch.equal(a[0][0], other[0][0]), "a resumed run does not replay the first batches"
    weights = train("classifier", folder, tmp_path / "run", dataclasses.replace(cfg, iterations=3))
    assert load_file(str(weights))
    with pytest.raises(InputError, match="data_workers"):
        train("classifier", folder, tmp_path / "bad", dataclasses.replace(cfg, data_workers=-1))


def test_real_slots_follow_the_pairs_from_outlined_crops_of_both_classes(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", with_labels=True)
    cfg = dataclasses.replace(TINY, paired=True, batch_size=8, augment=NO_AUGMENT, real_fraction=0.5)
    data = load_slice_data(folder, cfg)
    bare = int(np.flatnonzero(data.train.labels == 1)[0])
    data.train.organs[bare] = None  # a tumor crop without an outline never enters
    batches = _Batches(data.train, cfg, "classifier", np.random.default_rng(0))
    real = {i: data.train.canvas(i, np.random.default_rng(0), NO_AUGMENT).x for i in range(len(data.train))}
    seen = set()
    for _ in range(20):
        x, y, zone = batches.next(0)
        assert y.tolist() == [0, 1, 0, 1, 0, 1, 0, 1] and zone.shape[0] == 8
        assert ((x[0:4:2] - x[1:4:2]).abs().flatten(1).max(1).values > 0.1).all(), "two lesion pairs first"
        for k in (4, 5, 6, 7):  # then real slices, unchanged crops of the class their label says
            hits = [i for i, r in real.items() if np.array_equal(r, x[k, 0].numpy())]
            assert hits and all(int(data.train.labels[i]) == int(y[k]) for i in hits)
            seen.update(hits)
    assert bare not in seen
    weights = train("classifier", folder, tmp_path / "run", dataclasses.replace(cfg, iterations=2))
    header = (tmp_path / "run" / "loss.csv").read_text().splitlines()[0]
    assert header.endswith("loss_healthy,loss_lesion,loss_real_healthy,loss_real_tumor") and load_file(str(weights))
    with pytest.raises(InputError, match="real_fraction"):
        train("classifier", folder, tmp_path / "bad", dataclasses.replace(cfg, paired=False))
    data.train.organs[:] = [None if int(lab) == 1 else o for o, lab in zip(data.train.organs, data.train.labels)]
    with pytest.raises(InputError, match="outline"):
        _Batches(data.train, cfg, "classifier", np.random.default_rng(0))


STRONG = AugmentConfig(
    rotate_deg=180, flip_lr=True, zoom=0.15, intensity_scale=0.1, intensity_shift=0.03, noise_hu=12, blur_px=1.5
)


def test_strong_augmentation_keeps_each_pair_identical_outside_its_lesion(tmp_path):
    """Rotation, flips, zoom and noise are drawn per crop before the lesion: a pair differs only by it."""
    folder = write_slice_folder(tmp_path / "tc", with_labels=True)
    cfg = dataclasses.replace(TINY, paired=True, batch_size=8, augment=STRONG)
    batches = _Batches(load_slice_data(folder, cfg).train, cfg, "classifier", np.random.default_rng(0))
    x, _, _ = batches.next(0)
    diff = (x[0::2] - x[1::2]).abs()[:, 0].numpy()
    changed = diff > 1e-6
    assert (diff.reshape(4, -1).max(1) > 0.1).all()
    for pair in changed:  # one lesion (at most 30 mm across on a 64 mm canvas), nothing else
        assert ndimage.label(ndimage.binary_closing(pair, iterations=2))[1] == 1
        assert 0 < pair.mean() < 0.3
    plain = _Batches(load_slice_data(folder, cfg).train, dataclasses.replace(cfg, augment=NO_AUGMENT), "classifier",
                     np.random.default_rng(0)).next(0)[0]  # fmt: skip
    assert not torch.equal(x, plain), "the augmentation does change the canvases"


def test_noise_augmentation_has_the_asked_strength():
    image = np.full((80, 80), 0.5, np.float32)
    sampler = CropSampler([image], [0], PreprocessConfig(support_mm=40.0), 1.0)
    aug = dataclasses.replace(NO_AUGMENT, noise_hu=12.0)
    stds = [sampler.canvas(0, np.random.default_rng(i), aug) for i in range(40)]
    stds = [float(c.x[c.valid].std()) * 400 for c in stds]  # HU
    assert max(stds) < 12.5 and np.mean(stds) == pytest.approx(6, abs=1.5)


def test_blur_augmentation_smooths_texture_without_bleeding_the_fill():
    """Blur is drawn per canvas in U(0, blur_px); it lowers fine texture and the support's border keeps
    its level (the fill outside is never averaged in)."""
    rng = np.random.default_rng(0)
    image = np.clip(0.6 + 0.06 * rng.standard_normal((80, 80)), 0, 1).astype(np.float32)
    sampler = CropSampler([image], [0], PreprocessConfig(support_mm=40.0), 1.0)

    def texture(c) -> float:
        inner = ndimage.binary_erosion(c.valid, iterations=3)
        return float((c.x - ndimage.gaussian_filter(c.x, 1.0))[inner].std())

    sharp = [texture(sampler.canvas(0, np.random.default_rng(i), NO_AUGMENT)) for i in range(10)]
    blurred = [sampler.canvas(0, np.random.default_rng(i), dataclasses.replace(NO_AUGMENT, blur_px=2.0))
               for i in range(10)]  # fmt: skip
    assert np.mean([texture(c) for c in blurred]) < 0.75 * np.mean(sharp)
    for c in blurred:
        border = c.valid & ~ndimage.binary_erosion(c.valid)
        assert abs(float(c.x[border].mean()) - 0.6) < 0.03, "the fill (0) bled into the support's border"
        assert (c.x[~c.valid] == 0).all()


def test_a_narrower_window_rewindows_stored_crops(tmp_path):
    from pancdiff.datasets.slice_folder import STORED_WINDOW_HU, rewindow

    hu = np.array([-150.0, -50.0, 75.0, 200.0, 250.0])
    stored = ((hu - STORED_WINDOW_HU[0]) / 400).astype(np.float32)
    np.testing.assert_allclose(rewindow(stored, STORED_WINDOW_HU, (-50, 200)), [0, 0, 0.5, 1, 1], atol=1e-6)
    assert rewindow(stored, STORED_WINDOW_HU, STORED_WINDOW_HU) is stored


def test_a_run_can_start_from_earlier_weights(folder, tmp_path):
    first = train("classifier", folder, tmp_path / "a", dataclasses.replace(TINY, iterations=2))
    cfg = dataclasses.replace(TINY, iterations=1, lr=0.0, init_weights=str(first), ema_decay=0.999)
    second = load_file(str(train("classifier", folder, tmp_path / "b", cfg)))
    for key, value in load_file(str(first)).items():
        if value.is_floating_point():
            torch.testing.assert_close(second[key], value, msg=key)
    with pytest.raises(Exception, match="do not fit"):
        wide = dataclasses.replace(TINY.network, classifier_channels=(8, 8, 16))
        train("classifier", folder, tmp_path / "c", dataclasses.replace(cfg, network=wide))


def test_a_share_of_pairs_stays_conspicuous_after_the_contrast_fades(tmp_path):
    folder = write_slice_folder(tmp_path / "tc", with_labels=True)
    depth = {}
    for share in (0.0, 1.0):
        cfg = dataclasses.replace(TINY, paired=True, batch_size=16, augment=NO_AUGMENT, contrast_ramp=10,
                                  conspicuous_fraction=share)  # fmt: skip
        batches = _Batches(load_slice_data(folder, cfg).train, cfg, "classifier", np.random.default_rng(0))
        x, _, _ = batches.next(10**6)
        depth[share] = float((x[0::2] - x[1::2]).amax(dim=(1, 2, 3)).median()) * 400  # HU
    assert depth[0.0] < 60 * 1.3 + 1, depth  # realistic: 20-60 HU (heterogeneity up to +30 %)
    assert depth[1.0] > 90, depth  # conspicuous: 100-160 HU


def test_a_healthy_only_unet_sees_no_tumor_slice():
    """Healthy slices at 0.2, tumor slices at 0.8: a healthy-only diffusion batch holds no 0.8 pixel;
    the default batch does, and a classifier cannot be asked to train healthy-only."""
    images = [np.full((70, 70), 0.2 if i % 2 else 0.8, np.float32) for i in range(8)]
    data = CropSampler(images, [i % 2 == 0 for i in range(8)], PreprocessConfig(), 1.0, [None] * 8)
    cfg = dataclasses.replace(TINY, batch_size=16, augment=NO_AUGMENT, healthy_only=True)
    x, _, _ = _Batches(data, cfg, "diffusion", np.random.default_rng(0)).next()
    assert float(x.max()) < 0.5
    x, _, _ = _Batches(data, dataclasses.replace(cfg, healthy_only=False), "diffusion", np.random.default_rng(0)).next()
    assert float(x.max()) > 0.5
    with pytest.raises(InputError, match="healthy_only"):
        _Batches(data, cfg, "classifier", np.random.default_rng(0))
    tumor_only = CropSampler(images[::2], [1] * 4, PreprocessConfig(), 1.0, [None] * 4)
    with pytest.raises(InputError, match="healthy_only"):
        _Batches(tumor_only, cfg, "diffusion", np.random.default_rng(0))


def test_learning_rate_warms_up_holds_and_decays_to_one_percent():
    cfg = TrainConfig(iterations=1000, lr=1e-3, warmup=10, lr_decay_start=500)
    assert learning_rate(0, cfg) == pytest.approx(1e-4)
    assert learning_rate(300, cfg) == pytest.approx(1e-3) == learning_rate(500, cfg)
    assert learning_rate(750, cfg) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert learning_rate(1000, cfg) == pytest.approx(1e-5)
    assert learning_rate(999, dataclasses.replace(cfg, lr_decay_start=0)) == pytest.approx(1e-3)


def test_t_curriculum_starts_clean_and_widens_toward_low_t():
    cfg = TrainConfig(paired=True, max_timestep=300, t_clean_steps=100, t_ramp=100, clean_fraction=0.5)
    assert sample_timesteps(50, 64, cfg).eq(0).all()
    late = sample_timesteps(10_000, 4000, cfg, torch.Generator().manual_seed(0))
    assert late.max() < 300 and 0.4 < late.eq(0).float().mean() < 0.6
    noisy = late[late > 0].float()
    assert noisy.median() < 150, "t = t_max * u**2 favours low t"
    assert contrast_at(0, cfg) == cfg.contrast_start_hu and contrast_at(10**6, cfg) == cfg.lesions.contrast_hu


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(folder, tmp_path):
    """torchrun with the gloo backend: what multi-GPU users run, exercised on CPU processes."""
    import shutil
    import subprocess

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "iterations": 4,
                "batch_size": 4,
                "checkpoint_every": 2,
                "validate_every": 4,
                "warmup": 1,
                "threads": 1,
                "network": dataclasses.asdict(TINY_NETWORK),
            }
        )
    )
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "pancdiff", "--quiet", "train",
                          "classifier", "--data", str(folder), "--out", str(tmp_path / "out"), "--config", str(cfg)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "checkpoint" / "state.json").read_text())["step"] == 4
