"""Algorithm 1 on batches of slices: DDIM-encode to N, decode guided toward healthy, take |x - x_hat|.

Speed comes from the step grid (K << N steps, still true timesteps), batching slices, no-grad UNet
passes (bf16 autocast on GPU) and an fp32 classifier gradient. Same input, same device, same output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .config import DetectConfig, needs_unguided, to_dict
from .device import resolve_device
from .diffusion import alpha_bar_schedule, ddim_decode, ddim_encode, step_grid
from .encoding_cache import module_sha256
from .lesion_head import combined_map, fallback_map, head_fits, head_probability
from .map_student import student_fits, student_map, student_setting
from .networks import HEALTHY, TUMOR
from .weights import ModelBundle

Progress = Callable[[int, int], None]


@dataclass
class DetectionResult:
    """Per-slice outputs, all (B, S, S) float32 unless noted.

    Attributes:
        reconstruction: the guided healthy reconstruction x_hat.
        anomaly: sum over channels of |x - x_hat| (Algorithm 1, line 10), 0 outside the support.
        normalized: ``anomaly`` smoothed and scaled to [0, 1] (per slice as in the paper, or calibrated).
        candidates: bool, ``normalized >= threshold``.
        tumor_probability: (B,) the classifier's p(tumor | x, t = 0), the confidence shown to users.
        evaluations_per_slice: network passes each slice cost (UNet + classifier).
        latents: (B, 1, S, S) the DDIM encodings x_N the maps were decoded from.
        encode_seconds: wall time of the encoding (0 when the latents were given).
        guided: the diffusion's own map, in ``anomaly``'s units; it differs from ``anomaly`` only where a
            lesion head was averaged in (what the paper-exact run is compared with, ``pancdiff.benchmark``).
    """

    reconstruction: np.ndarray
    anomaly: np.ndarray
    normalized: np.ndarray
    candidates: np.ndarray
    tumor_probability: np.ndarray
    evaluations_per_slice: int
    latents: np.ndarray | None = None
    encode_seconds: float = 0.0
    guided: np.ndarray | None = None


def evaluations_per_slice(cfg: DetectConfig) -> int:
    """K encoding + K decoding UNet passes, K classifier gradients when guided, K - 1 more UNet passes
    for the unguided decode of the "guidance" map (its first pass, eps(x_N, N), is the guided
    decode's: ``_SharedStart``), 1 confidence pass (whose backward gives the saliency, when weighted)."""
    unguided = cfg.steps - 1 if needs_unguided(cfg.map_kind) and cfg.scale > 0 else 0
    return 2 * cfg.steps + (cfg.steps if cfg.scale > 0 else 0) + unguided + 1


def map_from(kind: str, x: np.ndarray, plain: np.ndarray | None, reconstruction: np.ndarray) -> np.ndarray:
    """One channel's anomaly map of a map kind (``DetectConfig.map_kind``): the change the guided decode
    made against the input or the unguided decode, absolute or (``_signed``) brightening only."""
    change = reconstruction - (plain if needs_unguided(kind) else x)
    return np.maximum(change, 0.0) if kind.endswith("_signed") else np.abs(change)


def smooth_maps(anomaly: np.ndarray, smooth_sigma_px: float = 0.0) -> np.ndarray:
    """(B, S, S) maps, each Gaussian-smoothed in-plane (no smoothing across slices)."""
    maps = anomaly.astype(np.float32)
    if smooth_sigma_px > 0:
        maps = np.stack([ndimage.gaussian_filter(m, smooth_sigma_px) for m in maps])
    return maps


def normalize_per_slice(anomaly: np.ndarray, smooth_sigma_px: float = 0.0) -> np.ndarray:
    """(B, S, S) maps scaled to [0, 1] by each slice's maximum (after optional Gaussian smoothing)."""
    maps = smooth_maps(anomaly, smooth_sigma_px)
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, maps / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


def normalize_maps(anomaly: np.ndarray, valid: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """The map users see and threshold: per-slice (paper) or calibrated, 0 outside the support."""
    if cfg.normalization == "calibrated":
        maps = np.clip(smooth_maps(anomaly, cfg.smooth_sigma_px) / cfg.map_scale, 0.0, 1.0)
    else:
        maps = normalize_per_slice(anomaly, cfg.smooth_sigma_px)
    return np.where(valid, maps, 0.0).astype(np.float32)


class Detector:
    """Runs guided DDIM anomaly detection with one bundle and one setting.

    Args:
        bundle: the UNet, classifier and their configs.
        cfg: scale S, noise level N, steps K, threshold, device, batch size.
    """

    def __init__(self, bundle: ModelBundle, cfg: DetectConfig) -> None:
        # where the bundle's map student fits the setting, decode with its few steps (``detect`` corrects the map)
        self.student = bundle.student if student_fits(bundle.student_config, cfg) else None
        # the lesion head reads the student's inputs, so it runs only where the student does
        self.head = bundle.head if head_fits(bundle.head_config, bundle.student_config, cfg) else None
        if self.student is not None:
            cfg = student_setting(bundle.student_config, cfg)
        self.bundle, self.cfg = bundle, cfg
        self.device = resolve_device(cfg.device)
        bundle.to(self.device)
        bundle.unet.eval()
        bundle.classifier.eval()
        if self.device.type == "cuda":
            bundle.unet.to(memory_format=torch.channels_last)
        self.alpha_bar = alpha_bar_schedule(bundle.schedule).to(self.device, torch.float32)
        self.grid = step_grid(cfg.noise_level, cfg.steps, cfg.grid_power)

    @property
    def passes_per_slice(self) -> int:
        """Network passes per slice of ``detect``: ``evaluations_per_slice`` of the decode, plus the student's
        and the lesion head's."""
        return evaluations_per_slice(self.cfg) + int(self.student is not None) + int(self.head is not None)

    # -- the two networks, as the diffusion maths sees them ------------------------------------
    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_theta(x_t, t) without gradients; bf16 autocast on GPU, result in fp32."""
        with torch.no_grad():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self.bundle.unet(x.contiguous(memory_format=torch.channels_last), t)
                return out.float()
            return self.bundle.unet(x, t)

    def _logits_and_grad(
        self, x: torch.Tensor, t: torch.Tensor, zone: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's logits (detached, fp32) and grad_x log p(healthy | x, t) from one pass and its backward."""
        with torch.enable_grad():
            x = x.detach().float().requires_grad_(True)
            logits = self.bundle.classifier(x, t, zone).float()
            (grad,) = torch.autograd.grad(F.log_softmax(logits, dim=1)[:, HEALTHY].sum(), x)
        return logits.detach(), grad

    def _probability(self, logits: torch.Tensor) -> torch.Tensor:
        return self.bundle.calibration.probability(logits[:, TUMOR] - logits[:, HEALTHY])

    def grad_log_healthy(self, x: torch.Tensor, t: torch.Tensor, zone: torch.Tensor | None = None) -> torch.Tensor:
        """grad_x log p(healthy | x_t, t) in fp32 (per slice: the batch sum separates); ``zone``
        (B, 1, S, S) bool is the pancreas zone a zone-pooled classifier looks at."""
        return self._logits_and_grad(x, t, zone)[1]

    def tumor_probability(self, x: torch.Tensor, zone: torch.Tensor | None = None) -> torch.Tensor:
        """p(tumor | x, t = 0): (B,), Platt-calibrated where the bundle carries a calibration."""
        with torch.no_grad():
            t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return self._probability(self.bundle.classifier(x, t, zone).float())

    def probability_and_saliency(
        self, x: torch.Tensor, zone: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tumor_probability`` and |grad_x log p(healthy | x, t = 0)| (B, S, S) from one classifier
        pass and its backward (``DetectConfig.saliency_weight``)."""
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        logits, grad = self._logits_and_grad(x, t, zone)
        return self._probability(logits), grad[:, 0].abs()

    def encoding_identity(self) -> dict:
        """Everything but the input that ``encode`` depends on (``pancdiff.encoding_cache``'s key):
        N, K, grid power, solver, schedule, the UNet's architecture and weights, and the arithmetic
        (bf16 autocast on CUDA gives other latents than fp32; CPU and MPS agree)."""
        return {
            "noise_level": self.cfg.noise_level,
            "steps": self.cfg.steps,
            "grid_power": self.cfg.grid_power,
            "solver": self.cfg.solver,
            "schedule": to_dict(self.bundle.schedule),
            "network": to_dict(self.bundle.network),
            "unet_sha256": module_sha256(self.bundle.unet),
            "precision": "bf16-autocast" if self.device.type == "cuda" else "fp32",
        }

    def encode(self, x: torch.Tensor, on_step: Callable[[], None] | None = None) -> torch.Tensor:
        """Deterministic latent x_N of x (eq. 14). It depends on N and K only, never on S."""
        eps = self.eps if on_step is None else _counting(self.eps, on_step)
        return ddim_encode(x, eps, self.grid, self.alpha_bar, self.cfg.solver)

    def decode(
        self,
        x_n: torch.Tensor,
        scale: float,
        on_step: Callable[[], None] | None = None,
        guidance: str | None = None,
        zone: torch.Tensor | None = None,
        start: _SharedStart | None = None,
    ) -> torch.Tensor:
        """Reconstruction from the latent, guided toward healthy with scale S (0 = plain); ``guidance``
        overrides the configured kind (an evaluation compares both on one latent); ``zone`` (B, 1, S, S)
        bool, the pancreas zone for a zone-pooled classifier; ``start``, the first pass shared by
        every decode of ``x_n``."""
        eps = self.eps if on_step is None else _counting(self.eps, on_step)
        if start is not None:
            eps = start.wrap(eps)
        grad = (lambda x, t: self.grad_log_healthy(x, t, zone)) if scale > 0 else None
        return ddim_decode(
            x_n, eps, self.grid, self.alpha_bar, grad, scale, guidance or self.cfg.guidance, self.cfg.solver,
            self.cfg.guidance_step,
        )  # fmt: skip

    def reconstruct(
        self, x: torch.Tensor, on_step: Callable[[], None] | None = None, zone: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Healthy reconstruction x_hat of x: (B, 1, S, S) in [0, 1] on ``self.device``."""
        return self.decode(self.encode(x, on_step), self.cfg.scale, on_step, zone=zone)

    def _maps(
        self,
        xb: torch.Tensor,
        x_n: torch.Tensor,
        scales: list[float],
        guidances: tuple,
        kinds: tuple,
        tick: Callable[[], None],
        zone: torch.Tensor | None = None,
    ) -> dict:
        """From one latent, one unguided decode where needed, one decode per (guidance, S > 0):
        {("reconstruction", guidance, S) or (guidance, map kind, S): (B, S, S)}, before the support."""
        x_np = xb[:, 0].float().cpu().numpy()
        guided = [s for s in scales if s > 0]
        start = _SharedStart(x_n)
        plain = None
        if 0.0 in scales or (any(map(needs_unguided, kinds)) and guided):
            plain = self.decode(x_n, 0.0, tick, start=start)[:, 0].float().cpu().numpy()
        out = {}
        for g in guidances:
            if 0.0 in scales:  # S = 0 is one map whatever the guidance or map kind
                out[("reconstruction", g, 0.0)] = plain
                out.update({(g, kind, 0.0): np.abs(x_np - plain) for kind in kinds})
            for s in guided:
                rec = self.decode(x_n, s, tick, guidance=g, zone=zone, start=start)[:, 0].float().cpu().numpy()
                out[("reconstruction", g, s)] = rec
                for kind in kinds:  # one channel: the channel sum is the map itself
                    out[(g, kind, s)] = map_from(kind, x_np, plain, rec)
        return out

    # -- the whole detection ---------------------------------------------------------------------
    def detect(
        self,
        x: np.ndarray,
        valid: np.ndarray | None = None,
        progress: Progress | None = None,
        latents: np.ndarray | None = None,
        zone: np.ndarray | None = None,
    ) -> DetectionResult:
        """Detect anomalies in canvases ``x`` (B, S, S) in [0, 1]; ``valid`` (B, S, S) bool support;
        ``latents`` (B, 1, S, S) their encodings from an earlier run with the same N and K (see
        ``map_grid``), which skips the encoding; ``zone`` (B, S, S) bool, their pancreas zones."""
        cfg = self.cfg
        grid = self.map_grid(
            x, valid, [cfg.scale], progress=progress, with_probability=True, latents=latents, zone=zone
        )
        anomaly, valid = grid["anomaly"][(cfg.guidance, cfg.map_kind, float(cfg.scale))], grid["valid"]
        arrays = {"x": np.asarray(x, np.float32), "valid": valid, "saliency": grid["saliency"], "map": anomaly,
                  "zone": valid if zone is None else zone}  # fmt: skip
        if self.student is not None:
            anomaly = student_map(self.student, self.bundle.student_config, arrays)
        if cfg.saliency_weight > 0:
            weighted = np.where(valid, cfg.saliency_weight * grid["saliency"], 0.0)
            anomaly = np.maximum(anomaly, weighted).astype(np.float32)
        head_cfg = self.bundle.head_config
        guided = anomaly if head_cfg is None else fallback_map(anomaly, head_cfg)  # in the heatmap's units
        if self.head is not None:  # the head reads the K-step map before the student's correction
            anomaly = combined_map(anomaly, head_probability(self.head, head_cfg, arrays), head_cfg)
        else:
            anomaly = guided
        normalized = normalize_maps(anomaly, valid, cfg)
        return DetectionResult(
            reconstruction=grid["reconstruction"][(cfg.guidance, float(cfg.scale))],
            anomaly=anomaly,
            normalized=normalized,
            candidates=normalized >= cfg.threshold,
            tumor_probability=grid["p"],
            evaluations_per_slice=self.passes_per_slice - (cfg.steps if latents is not None else 0),
            latents=grid["latents"],
            encode_seconds=grid["encode_s"],
            guided=guided,
        )

    def map_grid(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        scales,
        guidances: tuple | None = None,
        kinds: tuple | None = None,
        progress: Progress | None = None,
        with_probability: bool = False,
        latents: np.ndarray | None = None,
        zone: np.ndarray | None = None,
    ) -> dict:
        """Raw maps for several guidance scales, guidance kinds and map kinds from one encoding per
        slice (the latent depends on N and K only); the unguided decode only where a map needs it.
        ``latents`` (B, 1, S, S): the encodings of ``x`` under ``encoding_identity``, kept from an
        earlier call (``pancdiff.encoding_cache``); given, no slice is encoded again. ``zone``
        (B, S, S) bool: the pancreas zone of each canvas, which a zone-pooled classifier pools over
        (its confidence and its guidance); the encoding never depends on it.

        Returns:
            {"anomaly": {(guidance, map kind, S): (B, S, S), 0 outside the support},
            "reconstruction": {(guidance, S): (B, S, S)}, "p": (B,) p(tumor | x, t = 0) or None,
            "saliency": (B, S, S) |grad_x log p(healthy | x, 0)| with the probability when the setting
            has a saliency weight, else None,
            "valid": (B, S, S) bool, "latents": (B, 1, S, S) float32, "encode_s": seconds encoding}.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise ValueError(f"expected canvases (B, S, S), got shape {x.shape}")
        valid = np.ones(x.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        scales = sorted({float(s) for s in scales})
        guidances, kinds = tuple(guidances or (self.cfg.guidance,)), tuple(kinds or (self.cfg.map_kind,))
        if latents is not None and tuple(latents.shape) != (len(x), 1, *x.shape[1:]):
            raise ValueError(f"latents {latents.shape} do not match canvases {x.shape}")
        if zone is not None and np.shape(zone) != x.shape:
            raise ValueError(f"zones {np.shape(zone)} do not match canvases {x.shape}")
        guided = [s for s in scales if s > 0]
        need_plain = 0.0 in scales or (any(map(needs_unguided, kinds)) and bool(guided))
        decodes = int(need_plain) + len(guidances) * len(guided)
        passes_per_batch = (len(self.grid) - 1) * (int(latents is None) + decodes) - max(decodes - 1, 0)
        batch = self.cfg.batch_size or self._auto_batch_size()
        total_steps = passes_per_batch * int(np.ceil(len(x) / batch)) if len(x) else 0
        probs = np.empty(len(x), dtype=np.float32) if with_probability else None
        saliency = np.zeros(x.shape, np.float32) if with_probability and self.cfg.saliency_weight > 0 else None
        parts: dict = {}
        done = [0]
        encoded: list[np.ndarray] = []
        encode_s = 0.0

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total_steps)

        start = 0
        while start < len(x):
            xb = torch.from_numpy(x[start : start + batch])[:, None].to(self.device)
            zb = None if zone is None else torch.from_numpy(np.asarray(zone[start : start + len(xb)], bool))
            zb = None if zb is None else zb[:, None].to(self.device)
            try:
                if saliency is not None:
                    p, sal = (v.cpu().numpy() for v in self.probability_and_saliency(xb, zb))
                else:
                    p = self.tumor_probability(xb, zb).cpu().numpy() if probs is not None else None
                t0 = time.monotonic()
                if latents is None:
                    x_n = self.encode(xb, tick)
                    x_n_np = x_n.float().cpu().numpy()  # waits for the GPU: the time is the encoding's
                    spent = time.monotonic() - t0
                else:
                    x_n_np = np.array(latents[start : start + len(xb)], dtype=np.float32)  # a writable copy
                    x_n, spent = torch.from_numpy(x_n_np).to(self.device), 0.0
                chunk = self._maps(xb, x_n, scales, guidances, kinds, tick, zb)
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                total_steps = done[0] + passes_per_batch * int(np.ceil((len(x) - start) / batch))
                continue
            if probs is not None:
                probs[start : start + len(xb)] = p
            if saliency is not None:
                saliency[start : start + len(xb)] = sal
            encoded.append(x_n_np)
            encode_s += spent
            for key, value in chunk.items():
                parts.setdefault(key, []).append(value)
            start += len(xb)
        joined = {key: np.concatenate(v) for key, v in parts.items()}
        return {
            "anomaly": {
                k: np.where(valid, v, 0.0).astype(np.float32) for k, v in joined.items() if k[0] != "reconstruction"
            },
            "reconstruction": {k[1:]: v for k, v in joined.items() if k[0] == "reconstruction"},
            "p": probs,
            "saliency": saliency,
            "valid": valid,
            "latents": np.concatenate(encoded) if encoded else np.empty((0, 1, *x.shape[1:]), np.float32),
            "encode_s": encode_s,
        }

    def _auto_batch_size(self) -> int:
        """CPU: 32 (cache-friendly); GPU: what a quarter of free memory holds, at most 512."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            per_slice = 4 * self.bundle.network.image_size**2 * sum(self.bundle.network.channels) * 24
            return int(max(1, min(512, free // 4 // per_slice)))
        return 64 if self.device.type == "mps" else 32


class _SharedStart:
    """eps_theta(x_N, N), computed once for all decodes of one latent. Every decode's first step asks
    for exactly it (guidance is added after the network pass), so the unguided decode of the
    guidance map and each guided decode of an S or guidance grid share that pass; same numbers."""

    def __init__(self, x_n: torch.Tensor) -> None:
        self.x_n, self.eps = x_n, None

    def wrap(self, eps_fn: Callable) -> Callable:
        def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if x is not self.x_n:
                return eps_fn(x, t)
            if self.eps is None:
                self.eps = eps_fn(x, t)
            return self.eps

        return wrapped


def _counting(fn: Callable, on_call: Callable[[], None]) -> Callable:
    def wrapped(*args):
        out = fn(*args)
        on_call()
        return out

    return wrapped
