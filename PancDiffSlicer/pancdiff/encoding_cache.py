"""DDIM encodings x_N kept on disk, so a rerun with another S, threshold or guidance only decodes.

The latent x_N of eq. 14 depends on the model input and on N, K, the solver, the schedule, the UNet
and the arithmetic (fp32, or bf16 autocast on CUDA), never on S: the Slicer module's S slider and
repeated ``pancdiff detect`` runs on one CT reuse it. The key hashes exactly those, so a hit is
the latent an uncached run would compute (the batch size is not in it: each canvas is encoded on its
own, and batching changes the result only by float rounding). The cache is an optimisation only: a
corrupt, mismatched or unreadable entry, or a folder that cannot be written, is logged and the run
goes on uncached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

CACHE_FORMAT = 1
SUFFIX = ".safetensors"
STALE_PART_S = 3600.0  # a temporary file this old belongs to no running writer


def module_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's tensors (names, dtypes, shapes, bytes) wherever they live: the weights
    in use, also for a bundle that never touched a file (random weights, a model mid-training)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoding_key(canvases: np.ndarray, identity: dict[str, Any]) -> str:
    """The cache key: SHA-256 over ``identity`` (``Detector.encoding_identity``) and the canvases'
    float32 bytes and shape. canvases: (B, S, S) model inputs in [0, 1]."""
    x = np.ascontiguousarray(canvases, dtype=np.float32)
    digest = hashlib.sha256()
    head = {"format": CACHE_FORMAT, "shape": list(x.shape), **identity}
    digest.update(json.dumps(head, sort_keys=True).encode())
    digest.update(x.tobytes())
    return digest.hexdigest()


class EncodingCache:
    """A folder of ``<key>.safetensors`` files, one latent array (B, 1, S, S) float32 each.

    Written atomically (temporary file, then rename), so a reader never sees half a file. Bounded:
    after each write the least recently used entries go until at most ``max_entries`` files and
    ``max_bytes`` remain (a hit counts as a use).

    Args:
        directory: the cache folder (made on first write).
        max_entries: entries kept at most.
        max_bytes: bytes kept at most (a 100-canvas CT at 64 px takes 1.6 MB).
        log: where notes go (a corrupt entry, an unwritable folder); the run never stops for them.
    """

    def __init__(
        self,
        directory: str | Path,
        max_entries: int = 16,
        max_bytes: int = 256 << 20,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._log = log or (lambda message: None)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def load(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The latents stored under ``key`` if they are intact and of ``shape``, else None.

        A bad entry (truncated, another key inside, wrong shape, checksum off) is removed and logged.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        problem = ""
        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                latents = fh.get_tensor("latents") if "latents" in fh.keys() else None
            if meta.get("key") != key:
                problem = "it holds another key"
            elif latents is None or latents.dtype != np.float32 or tuple(latents.shape) != tuple(shape):
                problem = f"shape {None if latents is None else latents.shape} instead of {tuple(shape)}"
            elif hashlib.sha256(latents.tobytes()).hexdigest() != meta.get("sha256"):
                problem = "its checksum does not match"
        except (OSError, ValueError, SafetensorError) as exc:
            problem = f"unreadable ({exc})"
        if problem:
            self._log(f"encoding cache: ignoring {path.name}: {problem}; encoding again")
            self._remove(path)
            return None
        try:
            os.utime(path)  # a hit is a use: the newest entries survive eviction
        except OSError:
            pass
        return latents

    def store(self, key: str, latents: np.ndarray) -> bool:
        """Write the latents under ``key``, then evict; False (and a warning) when the folder refuses."""
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        meta = {"key": key, "sha256": hashlib.sha256(latents.tobytes()).hexdigest(), "format": str(CACHE_FORMAT)}
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".part")
            os.close(fd)
            save_file({"latents": latents}, tmp, metadata=meta)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError as exc:
            self._log(
                f"pancdiff: warning: encoding cache {self.directory} is not writable ({exc.strerror or exc}); "
                "this run goes on without saving its encoding"
            )
            return False
        finally:
            if tmp is not None:
                self._remove(Path(tmp))
        self._evict()
        return True

    def _evict(self) -> None:
        for part in self.directory.glob(".*.part"):  # a run killed while writing (Slicer's Cancel)
            try:
                if time.time() - part.stat().st_mtime > STALE_PART_S:
                    part.unlink()
            except OSError:
                pass
        entries = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort(reverse=True)  # newest first
        kept_bytes = 0
        for n, (_, size, path) in enumerate(entries):
            kept_bytes += size
            if n >= self.max_entries or (n > 0 and kept_bytes > self.max_bytes):
                self._remove(path)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


__all__ = ["EncodingCache", "encoding_key", "module_sha256"]
