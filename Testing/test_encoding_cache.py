"""The DDIM encoding x_N is kept between runs: a rerun that changes only S, the threshold or the
guidance kind decodes the kept latent and gives the maps of an uncached run; anything the encoding
depends on (canvases, N, K, solver, weights) misses; a bad entry or folder never fails a run."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from cli_support import FAST, pancdiff, synthetic_volume, write_case
from pancdiff.config import DetectConfig
from pancdiff.detection import Detector
from pancdiff.encoding_cache import EncodingCache, encoding_key
from pancdiff.pipeline import detect_volume
from pancdiff.progress import Reporter
from pancdiff.weights import init_bundle

BASE = {"steps": 2, "noise_level": 20, "min_anomaly": 0.0, "device": "cpu"}


class _Notes(Reporter):
    """A quiet reporter that keeps the info lines (the cache's notes and warnings)."""

    def __init__(self) -> None:
        super().__init__("quiet")
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


@pytest.fixture(scope="module")
def case():
    torch.set_num_threads(1)
    return synthetic_volume()


def _run(case, cache, seed: int = 0, reporter: Reporter | None = None, **overrides):
    ct, mask = case
    return detect_volume(ct, mask, init_bundle(seed=seed), {**BASE, **overrides}, reporter or _Notes(), cache)


def test_rerun_with_other_scale_threshold_and_guidance_decodes_the_kept_encoding_to_the_same_maps(case, tmp_path):
    cold = _run(case, tmp_path / "cache", scale=7.0)
    assert cold.encoding["cache"] == "miss" and cold.encoding["encode_s"] > 0
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    other = {"scale": 3.0, "threshold": 0.5, "guidance": "x0"}
    warm = _run(case, tmp_path / "cache", **other)
    assert warm.encoding["cache"] == "hit" and warm.encoding["from_cache"] and warm.encoding["encode_s"] == 0
    assert warm.evaluations_per_slice == cold.evaluations_per_slice - BASE["steps"]  # K encoding passes fewer
    uncached = _run(case, None, **other)
    assert uncached.encoding["cache"] == "off" and not uncached.encoding["from_cache"]
    for name in ("heatmap", "candidates", "tile_anomaly", "reconstructions", "tile_probability"):
        np.testing.assert_array_equal(getattr(warm, name), getattr(uncached, name), err_msg=name)
    assert warm.candidates.any()


def test_other_noise_level_or_weights_miss_and_the_same_ones_hit(case, tmp_path):
    cache = tmp_path / "cache"
    assert _run(case, cache).encoding["cache"] == "miss"
    assert _run(case, cache, noise_level=30).encoding["cache"] == "miss"
    assert _run(case, cache, seed=1).encoding["cache"] == "miss"
    assert _run(case, cache, steps=1).encoding["cache"] == "miss"
    assert _run(case, cache, scale=2.0, seed=1).encoding["cache"] == "hit"
    assert len(list(cache.glob("*.safetensors"))) == 4


def test_key_covers_what_the_encoding_depends_on_and_nothing_else():
    torch.set_num_threads(1)
    x = np.random.default_rng(0).uniform(0.2, 0.6, (2, 64, 64)).astype(np.float32)
    bundle = init_bundle(seed=0)

    def key(canvases=x, bundle=bundle, **cfg):
        return encoding_key(canvases, Detector(bundle, DetectConfig(**{**BASE, **cfg})).encoding_identity())

    base = key()
    same = [key(scale=1.0, threshold=0.6, guidance="x0", map_kind="guidance", batch_size=1, edge_mm=0.0)]
    assert same == [base]
    changed = [key(noise_level=30), key(steps=1), key(solver="dpm2m"), key(bundle=init_bundle(seed=1))]
    nudged = x.copy()
    nudged[1, 10, 10] = np.nextafter(nudged[1, 10, 10], np.float32(1))  # one float32 ulp in one pixel
    changed += [key(canvases=nudged), key(canvases=x[:1])]
    assert base not in changed and len(set(changed)) == len(changed)


def test_corrupt_or_mismatched_entries_are_logged_and_encoded_again(case, tmp_path):
    cache = tmp_path / "cache"
    _run(case, cache)
    (entry,) = cache.glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:-40])  # truncated
    notes = _Notes()
    assert _run(case, cache, reporter=notes, scale=3.0).encoding["cache"] == "miss"
    assert any("ignoring" in line and "encoding again" in line for line in notes.lines), notes.lines
    assert _run(case, cache, scale=4.0).encoding["cache"] == "hit"  # the recomputed entry was written again

    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF  # a flipped bit in the latents: the checksum catches it
    entry.write_bytes(bytes(data))
    notes = _Notes()
    assert _run(case, cache, reporter=notes).encoding["cache"] == "miss"
    assert any("checksum" in line for line in notes.lines), notes.lines

    store = EncodingCache(tmp_path / "other", log=notes.info)
    store.store("a" * 64, np.zeros((2, 1, 4, 4), np.float32))
    shutil.copy(store.path("a" * 64), store.path("b" * 64))  # an entry under another key's name
    assert store.load("b" * 64, (2, 1, 4, 4)) is None and not store.path("b" * 64).exists()
    assert "another key" in notes.lines[-1]
    assert store.load("a" * 64, (3, 1, 4, 4)) is None and "shape" in notes.lines[-1]


def test_cache_keeps_the_most_recently_used_entries_within_its_bounds(tmp_path):
    latents = np.ones((4, 1, 64, 64), np.float32)
    cache = EncodingCache(tmp_path, max_entries=2)
    for n, key in enumerate(("a", "b")):
        cache.store(key, latents)
        os.utime(cache.path(key), (1000 + n, 1000 + n))
    assert cache.load("a", latents.shape) is not None  # a hit makes "a" the newest
    cache.store("c", latents)
    assert sorted(p.stem for p in tmp_path.glob("*.safetensors")) == ["a", "c"]
    killed = tmp_path / ".x.part"  # what a writer killed mid-write leaves
    killed.write_bytes(b"")
    os.utime(killed, (1000, 1000))
    small = EncodingCache(tmp_path, max_bytes=latents.nbytes + 1000)
    small.store("d", latents)
    assert [p.stem for p in tmp_path.glob("*.safetensors")] == ["d"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind, an old one swept


def test_cli_reports_the_cache_in_the_summary_and_an_unwritable_folder_only_warns(tmp_path):
    ct, mask = write_case(tmp_path / "in")
    cache = tmp_path / "cache"
    args = [ct, "--pancreas-mask", mask, *FAST, "--encoding-cache", cache, "--progress", "json"]
    cold = pancdiff("detect", *args, "--out", tmp_path / "cold", "--scale", "7")
    warm = pancdiff("detect", *args, "--out", tmp_path / "warm", "--scale", "3", "--threshold", "0.5")
    assert cold.code == 0 and warm.code == 0, cold.stderr + warm.stderr
    first = json.loads((tmp_path / "cold" / "summary.json").read_text())["encoding"]
    second = json.loads((tmp_path / "warm" / "summary.json").read_text())["encoding"]
    assert (first["cache"], first["from_cache"], second["cache"], second["from_cache"]) == ("miss", False, "hit", True)
    assert first["encode_s"] > 0 and second["encode_s"] == 0 and second["cache_dir"] == str(cache)
    assert any("reusing the DDIM encoding" in e.get("message", "") for e in warm.json_lines())

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    refused = pancdiff("detect", ct, "--pancreas-mask", mask, *FAST, "--out", tmp_path / "refused",
                       "--encoding-cache", blocker / "cache")  # fmt: skip
    assert refused.code == 0, refused.stderr
    # a substring: a closed progress bar leaves "\r<spaces>\r" before the next line on a terminal
    assert "pancdiff: warning: encoding cache" in refused.stderr and "not writable" in refused.stderr, refused.stderr
    summary = json.loads((tmp_path / "refused" / "summary.json").read_text())
    assert summary["encoding"]["cache"] == "miss, not saved"
