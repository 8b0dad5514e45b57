"""The two networks, built from MONAI: an eps-prediction UNet and a noisy-slice classifier.

The classifier is the UNet's encoder half (MONAI's ``DiffusionModelEncoder``) with a global-average
pooled head instead of MONAI's flattened one: the flattened head fixes the input size and lets the
classifier key on *where* things are (crop borders, padding), one of the confounds we fight.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionModelEncoder, get_timestep_embedding
from torch import nn

from .config import NetworkConfig

HEALTHY, TUMOR = 0, 1  # logit order of the classifier; guidance targets HEALTHY


def build_unet(cfg: NetworkConfig) -> DiffusionModelUNet:
    """eps_theta(x_t, t): (B, C, H, W), (B,) -> (B, C, H, W)."""
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        channels=cfg.channels,
        attention_levels=cfg.attention_levels,
        num_res_blocks=cfg.num_res_blocks,
        norm_num_groups=cfg.norm_num_groups,
        num_head_channels=cfg.num_head_channels,
    )


class LogSumExpPool(nn.Module):
    """Smooth max over positions: (B, C, H, W) -> (B, C).

    A lesion is a small region; averaging over the whole canvas dilutes it, a max keeps it, and the
    gradient of a max-pooled logit lands on the lesion (what guidance needs). ``r`` sets how close to
    a hard max it is; subtracting log(HW) makes a constant map pool to itself.
    """

    def __init__(self, r: float = 4.0) -> None:
        super().__init__()
        self.r = r

    def forward(self, h: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """``where`` (B, 1, H, W) bool: pool only over these positions (a sample with none pools over all)."""
        flat = h.flatten(2)
        if where is None:
            return (torch.logsumexp(self.r * flat, dim=2) - math.log(flat.shape[2])) / self.r
        keep = where.flatten(2)
        keep = keep | ~keep.any(dim=2, keepdim=True)
        masked = (self.r * flat).masked_fill(~keep, float("-inf"))
        return (torch.logsumexp(masked, dim=2) - torch.log(keep.sum(dim=2).to(flat.dtype))) / self.r


class NoisyClassifier(DiffusionModelEncoder):
    """p(class | x_t, t): (B, C, H, W), (B,) -> (B, 2) logits [healthy, tumor].

    With ``classifier_zone`` set (LSE pooling only), ``forward``'s ``zone`` restricts the pooling to
    the pancreas zone: a healthy crop's vessels, bowel and fat outside the organ can then never look
    like a lesion, and the guidance gradient lands inside the organ. Callers pass the zone wherever
    they know it; a classifier without ``classifier_zone`` ignores it, so older bundles keep their
    exact outputs.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=cfg.in_channels,
            out_channels=2,
            input_shape=(cfg.image_size, cfg.image_size),
            channels=cfg.classifier_channels,
            attention_levels=cfg.classifier_attention_levels,
            num_res_blocks=cfg.num_res_blocks,
            norm_num_groups=cfg.norm_num_groups,
            num_head_channels=cfg.num_head_channels,
        )
        width = cfg.classifier_channels[-1]
        if cfg.classifier_pooling not in ("mean", "lse"):
            raise ValueError(f"classifier_pooling must be mean or lse, got {cfg.classifier_pooling!r}")
        if cfg.classifier_zone and cfg.classifier_pooling != "lse":
            raise ValueError("classifier_zone needs classifier_pooling = lse")
        self.use_zone = cfg.classifier_zone
        if cfg.classifier_pooling == "lse":
            # Logits per position, then a smooth max: the tumor logit is the most lesion-like place.
            self.out = nn.Sequential(nn.GroupNorm(cfg.norm_num_groups, width), nn.SiLU(), nn.Conv2d(width, 2, 1))
            self.pool: LogSumExpPool | None = LogSumExpPool()
        else:
            self.pool = None  # the head pools itself
            self.out = nn.Sequential(
                nn.GroupNorm(cfg.norm_num_groups, width),
                nn.SiLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(width, 2),
            )

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, timesteps: torch.Tensor, zone: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``zone`` (B, 1, H, W) or (B, H, W) bool, the pancreas zone on the input canvas (or None)."""
        return self.logits_and_positions(x, timesteps, zone)[0]

    def logits_and_positions(
        self, x: torch.Tensor, timesteps: torch.Tensor, zone: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The logits (B, 2), and for an LSE head the per-position logits it pools (B, 2, h, w) with
        the positions it pooled over ((B, 1, h, w) bool, or None for all); a mean head gives None, None.
        The per-position tumor-minus-healthy logit is the class activation map: where the classifier
        puts its evidence, read from the forward pass alone."""
        emb = self.time_embed(get_timestep_embedding(timesteps, self.block_out_channels[0]).to(x.dtype))
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(hidden_states=h, temb=emb, context=None)
        h = self.out(h)
        if self.pool is None:
            return h, None, None
        where = None
        if self.use_zone and zone is not None:
            z = zone.reshape(len(x), 1, *zone.shape[-2:]).float()
            where = F.adaptive_max_pool2d(z, h.shape[-2:]) > 0  # a position sees the zone if any pixel does
        return self.pool(h, where), h, where


def class_evidence(
    positions: torch.Tensor, where: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The class activation map on the canvas: per-position tumor-minus-healthy logits (B, 2, h, w)
    upsampled bilinearly to (B, size, size), and where the pool saw them (B, size, size) bool
    (nearest upsampling undoes the zone's max pooling onto the grid; all True without a zone, or for a
    sample whose zone missed every position, as ``LogSumExpPool`` then pools over all)."""
    e = (positions[:, TUMOR] - positions[:, HEALTHY])[:, None].float()
    up = F.interpolate(e, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    if where is None:
        return up, torch.ones_like(up, dtype=torch.bool)
    where = where | ~where.flatten(1).any(dim=1)[:, None, None, None]
    seen = F.interpolate(where.float(), size=(size, size), mode="nearest")[:, 0] > 0
    return up, seen


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
