"""Model bundles: safetensors only, verified SHA-256, exact round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pancdiff.errors import WeightsError
from pancdiff.weights import CARD_FILE, UNET_FILE, bundled_model_dir, init_bundle, load_bundle, save_bundle


def test_round_trip_gives_the_same_networks(tmp_path):
    bundle = init_bundle(seed=3)
    save_bundle(bundle, tmp_path)
    loaded = load_bundle(tmp_path)
    x, t = torch.rand(2, 1, 64, 64), torch.tensor([0, 500])
    with torch.no_grad():
        assert torch.equal(bundle.unet(x, t), loaded.unet(x, t))
        assert torch.equal(bundle.classifier(x, t), loaded.classifier(x, t))
    assert loaded.model_id == bundle.model_id and loaded.network == bundle.network


def test_a_changed_weight_file_is_refused(tmp_path):
    save_bundle(init_bundle(), tmp_path)
    data = bytearray((tmp_path / UNET_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / UNET_FILE).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_bundle(tmp_path)


def test_missing_bundle_says_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match="model.json"):
        load_bundle(tmp_path)


def test_weights_are_not_pickles(tmp_path):
    save_bundle(init_bundle(), tmp_path)
    header_len = int.from_bytes((tmp_path / UNET_FILE).read_bytes()[:8], "little")
    header = json.loads((tmp_path / UNET_FILE).read_bytes()[8 : 8 + header_len])
    assert all("dtype" in v for k, v in header.items() if k != "__metadata__")
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert set(card["sha256"]) == {"unet.safetensors", "classifier.safetensors"}
    assert np.isfinite(card["schedule"]["beta_end"])


@pytest.mark.skipif(not (bundled_model_dir() / "model.json").is_file(), reason="bundled models absent")
def test_the_bundled_operating_point_is_the_one_its_card_says_was_chosen():
    """The settings detection loads are those the release chose on the tuning half, and the card's
    markdown is what the release renders from model.json (nothing edited by hand)."""
    card = json.loads((bundled_model_dir() / "model.json").read_text(encoding="utf-8"))
    op, chosen = load_bundle().operating_point, card["operating_point_selection"]
    assert (op.guidance, op.map_kind, op.scale, op.noise_level, op.threshold, op.normalization) == (
        chosen["chosen"]["guidance"], chosen["chosen"]["map_kind"], chosen["chosen"]["scale"],
        chosen["chosen"]["noise_level"], chosen["chosen"]["threshold"], chosen["chosen"]["normalization"],
    )  # fmt: skip
    if "peak" in chosen:
        assert op.peak_sigma_px == chosen["peak"]["chosen_peak_sigma_px"]
    assert (bundled_model_dir() / "MODEL_CARD.md").read_text(encoding="utf-8") == _release().card_markdown(card)


def test_the_card_says_when_the_classifier_saw_real_tumor_slices():
    card = json.loads((bundled_model_dir() / "model.json").read_text(encoding="utf-8"))
    c = card["training"]["classifier"]
    c.update(batch_size=32, paired=True, real_fraction=0.0)
    plain = _release().card_markdown(card)
    c.update(real_fraction=0.25)
    mixed = _release().card_markdown(card)
    assert "(16 counterfactual pairs)" in plain and "real-slice slots are not paired" not in plain
    assert "(12 counterfactual pairs and 8 real slices, half tumor and half healthy)" in mixed
    assert "real-slice slots are not paired" in mixed


def _release():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "release_models.py"
    spec = importlib.util.spec_from_file_location("release_models", script)
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    return release
