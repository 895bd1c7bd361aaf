"""The device a job runs on and how a batch of stage arrays reaches it, in the model's input scale."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from pipeline.data.preprocess import scale_pixels
from pipeline.errors import ConfigError
from pipeline.runtime.prefetch import HostBatch, host_batch


def select_device(preference: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def to_tensors(arrays: dict[str, np.ndarray] | HostBatch, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images ``(B, C, H, W)`` → float32 in [-1, 1]; masks ``(B, H, W)`` and labels ``(B,)`` as int64.

    Host tensors in pinned memory (:func:`pipeline.runtime.prefetch.host_batch`) are copied asynchronously.
    """
    if any(isinstance(v, np.ndarray) for v in arrays.values()):
        tensors = host_batch(cast(dict[str, np.ndarray], arrays))
    else:
        tensors = cast(HostBatch, arrays)
    out = {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
    out["image"] = scale_pixels(out["image"])
    out["mask"] = out["mask"].long()
    return out
