"""Training writes what it promises, resumes exactly, and fights the crop-size confound."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from engine_support import TINY_NETWORK, write_slice_folder
from pancdiff.config import PreprocessConfig
from pancdiff.crop_samples import NO_AUGMENT, AugmentConfig, CropSampler
from pancdiff.datasets.slice_folder import load_slice_image, read_manifest
from pancdiff.errors import InputError
from pancdiff.metrics import auroc
from pancdiff.train import TrainConfig, config_from_json, train
from safetensors.torch import load_file

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


def test_size_matching_removes_the_crop_size_cue(folder):
    records = read_manifest(folder)
    images = [load_slice_image(r.path) for r in records]
    labels = np.array([r.tumor for r in records])
    sampler = CropSampler(images, labels.tolist(), PreprocessConfig())
    rng = np.random.default_rng(0)

    def visible_area(aug):
        return np.array([sampler.sample(i, rng, aug)[1].sum() for i in range(len(images)) for _ in range(4)])

    repeated = np.repeat(labels, 4)
    raw = auroc(repeated, -visible_area(dataclasses.replace(NO_AUGMENT, size_match=False)))
    matched = auroc(repeated, -visible_area(AugmentConfig()))
    assert raw > 0.95, "the synthetic data must carry the confound for this test to mean anything"
    assert abs(matched - 0.5) < 0.2, matched


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(folder, tmp_path):
    """torchrun with the gloo backend: what multi-GPU users run, exercised on CPU processes."""
    import shutil
    import subprocess

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"iterations": 4, "batch_size": 4, "checkpoint_every": 2, "validate_every": 4,
                               "warmup": 1, "threads": 1, "network": dataclasses.asdict(TINY_NETWORK)}))
    run = subprocess.run([torchrun, "--nproc_per_node=2", "-m", "pancdiff", "--quiet", "train", "classifier",
                          "--data", str(folder), "--out", str(tmp_path / "out"), "--config", str(cfg)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "checkpoint" / "state.json").read_text())["step"] == 4
