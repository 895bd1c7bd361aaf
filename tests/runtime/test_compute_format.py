"""Mixed precision and channels-last training: still learns, and matches float32 where it must."""

import pytest
import torch
import yaml

from pipeline.config import deep_merge, parse_params
from pipeline.data.folds import load_fold
from pipeline.errors import ConfigError
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.tasks import build_tasks
from pipeline.train.loop import Trainer
from tests.conftest import TINY, tiny_params


def _fit(tiny_data, balancer="equal", model=None, **train):
    params = tiny_params(train={"epochs": 3, **train}, **({"model": model} if model else {}))
    trainer = Trainer(params, build_tasks(params), balancer, load_fold(tiny_data, 0), fold=0)
    return trainer, trainer.fit()


def _total_train_loss(record):
    return sum(v for k, v in record.items() if k.startswith("train_loss/"))


def _assert_learned(trainer, result):
    first, last_two = result.history[0], result.history[-2:]
    assert max(_total_train_loss(r) for r in last_two) < _total_train_loss(first)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32


@pytest.mark.parametrize("balancer", ["equal", "gradnorm"])
def test_bf16_training_decreases_the_loss(tiny_data, balancer):
    _assert_learned(*_fit(tiny_data, balancer, amp="bf16", epochs=6, batch_size=4))


def test_fp16_training_scales_the_loss_and_decreases_it(tiny_data):
    # GradNorm differentiates each task's loss times the loss scale (its per-task half-precision backward passes
    # are scaled too). Half width: fp16 convolutions are
    # slow on CPUs (no native kernels); 6 epochs of 4 steps, as the scaler skips its first few steps.
    trainer, result = _fit(tiny_data, "gradnorm", model={"width": 8}, amp="fp16", epochs=6, batch_size=4)
    _assert_learned(trainer, result)
    scale = trainer.compute.loss_scale()
    assert 1.0 < scale < 2.0**16  # gradients were scaled up, and the scale backed off after overflows
    assert trainer.state_dict()["compute"]["scale"] == scale  # a resumed run continues with it


def test_channels_last_computes_what_the_contiguous_layout_computes(tiny_data):
    params = {False: tiny_params(), True: tiny_params(train={"channels_last": True})}
    trainers = {
        nhwc: Trainer(p, build_tasks(p), "equal", load_fold(tiny_data, 0), fold=0) for nhwc, p in params.items()
    }
    conv = next(p for p in trainers[True].model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    (contiguous, _), (nhwc, _) = (trainers[k].evaluate(trainers[k].data.val) for k in (False, True))
    torch.testing.assert_close(nhwc, contiguous, rtol=1e-5, atol=1e-6)  # same weights, same losses


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "off")],
)
def test_auto_runs_bf16_channels_last_exactly_on_cpus_with_bf16_instructions(monkeypatch, avx512_bf16, amx, expected):
    # The CPU's instruction sets are the input of the rule; this machine has one answer, so they are set here.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    compute = ComputeFormat("auto", "auto", torch.device("cpu"))
    assert compute.amp == expected
    assert (compute.memory_format is torch.channels_last) == (expected == "bf16")
    assert compute.describe() == ("bf16, channels-last" if expected == "bf16" else "float32, contiguous")
    assert ComputeFormat("auto", False, torch.device("cpu")).memory_format is torch.contiguous_format  # explicit wins


def test_the_default_params_ask_for_auto_and_the_fold_result_names_what_ran(tiny_data):
    defaults = parse_params({}, "defaults").train
    assert (defaults.amp, defaults.channels_last) == ("auto", "auto")
    _, result = _fit(tiny_data, amp="auto", channels_last="auto", epochs=1)
    assert result.compute_format == ComputeFormat("auto", "auto", torch.device("cpu")).describe()


def test_unknown_precision_is_refused_with_the_allowed_values():
    with pytest.raises(ConfigError, match="auto, off, bf16, fp16"):
        ComputeFormat("fp8", False, torch.device("cpu"))
    with pytest.raises(ConfigError, match="amp"):
        tiny_params(train={"amp": "fp8"})


def test_an_unquoted_yaml_off_means_off():
    raw = yaml.safe_load("train: {amp: off}")  # YAML 1.1: off is the boolean false
    assert raw["train"]["amp"] is False
    assert parse_params(deep_merge(TINY, raw)).train.amp == "off"


def test_bf16_is_refused_on_gpus_that_emulate_it_and_allowed_where_native():
    from pipeline.runtime.compute_format import amp_refusal

    refusal = amp_refusal("bf16", "cuda", (7, 5))
    assert "compute capability 7.5" in refusal and "fp16" in refusal
    assert amp_refusal("bf16", "cuda", (8, 0)) is None
    assert amp_refusal("fp16", "cuda", (7, 0)) is None
    assert amp_refusal("bf16", "cpu", None) is None


def test_cuda_runs_autotune_and_use_tf32_unless_deterministic():
    from pipeline.runtime.compute_format import cuda_backend_settings

    fast, exact = cuda_backend_settings(deterministic=False), cuda_backend_settings(deterministic=True)
    assert fast["cudnn.benchmark"] and fast["cuda.matmul.allow_tf32"] and fast["cudnn.allow_tf32"]
    assert not fast["deterministic_algorithms"]
    assert exact["deterministic_algorithms"] and exact["cudnn.deterministic"]
    assert not (exact["cudnn.benchmark"] or exact["cuda.matmul.allow_tf32"] or exact["cudnn.allow_tf32"])
