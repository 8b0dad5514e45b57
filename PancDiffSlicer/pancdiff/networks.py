"""The two networks, built from MONAI: an eps-prediction UNet and a noisy-slice classifier.

The classifier is the UNet's encoder half (MONAI's ``DiffusionModelEncoder``) with a global-average
pooled head instead of MONAI's flattened one: the flattened head fixes the input size and lets the
classifier key on *where* things are (crop borders, padding), one of the confounds we fight.
"""

from __future__ import annotations

import torch
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


class NoisyClassifier(DiffusionModelEncoder):
    """p(class | x_t, t): (B, C, H, W), (B,) -> (B, 2) logits [healthy, tumor]."""

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
        self.out = nn.Sequential(
            nn.GroupNorm(cfg.norm_num_groups, width),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 2),
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        emb = self.time_embed(get_timestep_embedding(timesteps, self.block_out_channels[0]).to(x.dtype))
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(hidden_states=h, temb=emb, context=None)
        return self.out(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
