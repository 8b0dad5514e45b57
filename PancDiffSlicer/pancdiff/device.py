"""Device choice: ``auto`` picks cuda, then mps, then cpu; asking for an absent one is an error."""

from __future__ import annotations

import torch

from .errors import DependencyError


def resolve_device(name: str = "auto") -> torch.device:
    """A torch device for ``name`` ("auto", "cpu", "cuda", "cuda:1", "mps")."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DependencyError(
            "device 'cuda' requested but this torch has no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch"
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DependencyError("device 'mps' requested but Apple MPS is not available; use --device cpu")
    return torch.device(name)
