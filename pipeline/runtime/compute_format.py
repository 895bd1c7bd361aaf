"""How the training loop computes: mixed precision (``train.amp``) and memory layout (``train.channels_last``).

``amp``:

* ``auto`` — the default: ``bf16`` where the hardware computes bf16 natively (:func:`native_bf16`: CUDA GPUs of
  compute capability ≥ 8.0, CPUs with AVX-512 BF16 or AMX), ``off`` elsewhere. Decided by measurement: on the
  default profile bf16 moved no balancer's test figures by more than a change of seed does, and took 0.54× the
  float32 step on an AMX CPU (README: Mixed precision);
* ``off`` — float32 throughout (on CPUs without bf16 instructions, bf16/fp16 kernels are slower than float32);
* ``bf16`` — the forward pass runs under ``torch.autocast(dtype=torch.bfloat16)``; bf16 has float32's
  exponent range, so no loss scaling is needed (Ampere and later GPUs, CPUs with AMX);
* ``fp16`` — autocast to float16 with dynamic loss scaling (``torch.amp.GradScaler``): the loss is
  multiplied by the scale before backward, gradients are divided by it before the optimiser step, and
  a step whose gradients overflowed is skipped while the scale backs off.

Parameters, optimiser state, the losses and the balancers' arithmetic stay float32 in every mode:
the heads' outputs are cast to float32 before the losses are computed, and the backward passes run
outside autocast (as PyTorch recommends).

``channels_last`` stores the model's weights and the input images ``(B, C, H, W)`` in NHWC order, which
cuDNN's and oneDNN's fastest convolution kernels use (most of all with fp16/bf16 tensor cores); ``auto`` turns it on
exactly when the resolved ``amp`` is ``bf16``, the combination measured. On CUDA it
is not applied to models with instance or group normalisation (BasicUNet, SwinUNETR): those layers have no
NHWC kernels there and would convert the layout at every call (a warning says so; unmeasured here).

On CUDA the backends are set per run (:func:`cuda_backend_settings`): cuDNN autotuning and TF32 matmuls and
convolutions for speed, or, with ``train.deterministic``, deterministic algorithms only (no autotuning, no
TF32, ``torch.use_deterministic_algorithms``, and the cuBLAS workspace setting it requires). bf16 is refused
on GPUs below compute capability 8.0, where it is emulated (:func:`amp_refusal`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, TypeVar

import torch

from pipeline.errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_CAPABILITY = (8, 0)
"""CUDA compute capability from which bf16 runs on tensor cores (Ampere); below it bf16 is emulated."""
LAYOUT_CONVERTING_NORMS = (torch.nn.InstanceNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
"""Normalisation layers without channels-last CUDA kernels: a channels-last input is converted at each call."""
CUBLAS_WORKSPACE = ":4096:8"
"""The cuBLAS workspace setting that ``torch.use_deterministic_algorithms`` requires on CUDA ≥ 10.2."""

Model = TypeVar("Model", bound=torch.nn.Module)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU of compute capability ≥ 8.0 (tensor cores), or a
    CPU with AVX-512 BF16 or AMX instructions (oneDNN's bf16 kernels; without them bf16 is emulated and slower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision ``amp`` runs in on ``device``: ``auto`` becomes ``bf16`` or ``off`` (:func:`native_bf16`)."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "off"


def resolve_channels_last(channels_last: bool | str, amp: str) -> bool:
    """Whether to train channels-last: ``auto`` means with bf16 (``amp`` resolved), where NHWC was measured to pay:
    0.54× the float32 step on an AMX CPU against 0.75× for bf16 alone (README: Benchmarks)."""
    return amp == "bf16" if channels_last == "auto" else bool(channels_last)


def amp_refusal(amp: str, device_type: str, capability: tuple[int, int] | None) -> str | None:
    """Why ``amp`` must not run on this device (a one-line message), or None when it may.

    ``capability``: the CUDA device's compute capability, None off CUDA.
    """
    if amp == "bf16" and device_type == "cuda" and capability is not None and capability < NATIVE_BF16_CAPABILITY:
        major, minor = capability
        return (
            f"train.amp = 'bf16': this GPU has compute capability {major}.{minor}, below "
            f"{NATIVE_BF16_CAPABILITY[0]}.{NATIVE_BF16_CAPABILITY[1]}, where bf16 is emulated and slower than "
            f"float32; use train.amp = 'fp16' or 'off'"
        )
    return None


def cuda_backend_settings(deterministic: bool) -> dict[str, bool]:
    """The ``torch.backends`` flags a CUDA run sets: speed (cuDNN autotuning, TF32) or determinism."""
    return {
        "cudnn.benchmark": not deterministic,
        "cudnn.deterministic": deterministic,
        "cudnn.allow_tf32": not deterministic,
        "cuda.matmul.allow_tf32": not deterministic,
        "deterministic_algorithms": deterministic,
    }


def configure_cuda_backends(deterministic: bool) -> None:
    """Apply :func:`cuda_backend_settings` to this process (call before the first CUDA kernel)."""
    settings = cuda_backend_settings(deterministic)
    torch.backends.cudnn.benchmark = settings["cudnn.benchmark"]
    torch.backends.cudnn.deterministic = settings["cudnn.deterministic"]
    torch.backends.cudnn.allow_tf32 = settings["cudnn.allow_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = settings["cuda.matmul.allow_tf32"]
    if settings["deterministic_algorithms"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read by cuBLAS, not by this project
    torch.use_deterministic_algorithms(settings["deterministic_algorithms"])


class ComputeFormat:
    """Mixed precision and memory layout of one training run on ``device``."""

    def __init__(self, amp: str, channels_last: bool | str, device: torch.device, deterministic: bool = False):
        """``amp`` and ``channels_last`` as configured; ``auto`` is resolved for ``device`` (:attr:`amp` holds the
        result, as does :attr:`memory_format`)."""
        if amp not in ("auto", "off", *AMP_DTYPES):
            raise ConfigError(f"train.amp = {amp!r}: expected one of auto, off, {', '.join(AMP_DTYPES)}")
        amp = resolve_amp(amp, device)
        channels_last = resolve_channels_last(channels_last, amp)
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        if refusal := amp_refusal(amp, device.type, capability):
            raise ConfigError(refusal)
        if device.type == "cuda":
            configure_cuda_backends(deterministic)
        self.amp = amp
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    @classmethod
    def from_params(cls, train: Any, device: torch.device) -> ComputeFormat:
        """From the ``train`` section of the params (``amp``, ``channels_last``, ``deterministic``)."""
        return cls(train.amp, train.channels_last, device, train.deterministic)

    def describe(self) -> str:
        """This format in words, e.g. ``bf16, channels-last`` or ``float32, contiguous``."""
        precision = "float32" if self.amp == "off" else self.amp
        layout = "channels-last" if self.memory_format is torch.channels_last else "contiguous"
        return f"{precision}, {layout}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in: autocast to the ``amp`` dtype, or nothing for ``off``."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def prepare_model(self, model: Model) -> Model:
        """``model`` with its 4-D weights in this format's memory layout (in place; returned for chaining).

        On CUDA a model with layout-converting normalisation layers stays contiguous (module docstring).
        """
        if self.memory_format is torch.channels_last and self.device.type == "cuda":
            converting = sorted({type(m).__name__ for m in model.modules() if isinstance(m, LAYOUT_CONVERTING_NORMS)})
            if converting:
                warnings.warn(
                    f"train.channels_last ignored on CUDA for a model with {', '.join(converting)} layers "
                    f"(no channels-last kernels: the layout would be converted at every call)",
                    stacklevel=2,
                )
                self.memory_format = torch.contiguous_format
        return model.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # torch's stub lacks it

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in this format's memory layout (a copy only when the layout changes)."""
        return images.contiguous(memory_format=self.memory_format)

    def loss_scale(self) -> float | torch.Tensor:
        """The factor the step's losses are multiplied by before backward: the current fp16 loss scale as a
        0-d tensor on the device (read without a host round-trip), else 1.0."""
        if not self.scaler.is_enabled():
            return 1.0
        return self.scaler.scale(torch.ones((), device=self.device))

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients of ``optimizer``'s parameters by the loss scale (fp16; no-op otherwise)."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
        """``optimizer.step()``, skipped under fp16 when a gradient overflowed; then updates the loss scale.

        Returns whether the step was skipped, as a bool scalar on the device (the scale backs off exactly
        when a step is skipped), or None when steps are never skipped (``off``, ``bf16``).
        """
        if not self.scaler.is_enabled():
            optimizer.step()
            return None
        before = self.loss_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return torch.as_tensor(self.loss_scale() < before)

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state (empty unless ``fp16``), so that a resumed run scales identically."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
