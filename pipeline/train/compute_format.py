"""How the training loop computes: mixed precision (``train.amp``) and memory layout (``train.channels_last``).

``amp``:

* ``off`` — float32 throughout (the default; on most CPUs bf16/fp16 kernels are slower than float32);
* ``bf16`` — the forward pass runs under ``torch.autocast(dtype=torch.bfloat16)``; bf16 has float32's
  exponent range, so no loss scaling is needed (Ampere and later GPUs, CPUs with AMX);
* ``fp16`` — autocast to float16 with dynamic loss scaling (``torch.amp.GradScaler``): the loss is
  multiplied by the scale before backward, gradients are divided by it before the optimiser step, and
  a step whose gradients overflowed is skipped while the scale backs off.

Parameters, optimiser state, the losses and the balancers' arithmetic stay float32 in every mode:
the heads' outputs are cast to float32 before the losses are computed, and the backward passes run
outside autocast (as PyTorch recommends).

``channels_last`` stores the model's weights and the input images ``(B, C, H, W)`` in NHWC order, which
cuDNN's and oneDNN's fastest convolution kernels use (most of all with fp16/bf16 tensor cores).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from pipeline.errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ComputeFormat:
    """Mixed precision and memory layout of one training run on ``device``."""

    def __init__(self, amp: str, channels_last: bool, device: torch.device):
        if amp != "off" and amp not in AMP_DTYPES:
            raise ConfigError(f"train.amp = {amp!r}: expected one of off, {', '.join(AMP_DTYPES)}")
        self.amp = amp
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    @classmethod
    def from_params(cls, train: Any, device: torch.device) -> ComputeFormat:
        """From the ``train`` section of the params (``amp``, ``channels_last``)."""
        return cls(train.amp, train.channels_last, device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in: autocast to the ``amp`` dtype, or nothing for ``off``."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` with its 4-D weights in this format's memory layout (in place; returned for chaining)."""
        return model.to(memory_format=self.memory_format)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in this format's memory layout (a copy only when the layout changes)."""
        return images.contiguous(memory_format=self.memory_format)

    def loss_scale(self) -> float:
        """The factor the step's losses are multiplied by before backward: the current fp16 loss scale, else 1."""
        if not self.scaler.is_enabled():
            return 1.0
        return float(self.scaler.scale(torch.ones((), device=self.device)))

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients of ``optimizer``'s parameters by the loss scale (fp16; no-op otherwise)."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped under fp16 when a gradient overflowed; then updates the loss scale."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state (empty unless ``fp16``), so that a resumed run scales identically."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
