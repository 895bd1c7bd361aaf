"""``make gpu-check DEVICE=cpu`` runs every check of the device path and writes the summary a user reads.

The make run is the one a user types (the Makefile's ``$(STAMP)`` is taken as satisfied: a test never
reinstalls the environment), with its output and temporary files under the test's own folder.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.bench import gpu_check
from pipeline.cli import main
from pipeline.config import load_params
from pipeline.tasks import build_tasks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory) -> tuple[dict, str, Path]:
    """The summary, the printed table and the folder of one ``make gpu-check DEVICE=cpu``."""
    folder = tmp_path_factory.mktemp("gpu_check")
    out = folder / "gpu_check.json"
    done = subprocess.run(
        [
            "make",
            "-C",
            str(ROOT),
            "-o",
            ".venv/.installed",
            "gpu-check",
            "DEVICE=cpu",
            f"BIN={Path(sys.executable).parent}",
            f"GPU_CHECK_OUT={out}",
        ],
        env={**os.environ, "TMPDIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout, folder


@pytest.mark.slow
def test_every_balancer_and_stl_train_with_finite_losses_and_step_times_against_equal(cpu_check):
    results, _, _ = cpu_check
    trained = results["training"]
    assert results["passed"] and trained["passed"]
    assert set(trained["balancers"]) == set(gpu_check.BALANCERS)  # every balancer and stl
    equal = trained["balancers"]["equal"]
    for name, r in trained["balancers"].items():
        assert r["passed"], (name, r["error"])
        assert all(math.isfinite(v) for losses in r["losses"].values() for v in losses), name
        assert 0 < r["step_ms_median"] <= r["step_ms_max"] < math.inf, name
        assert r["time_ratio_vs_equal"] == pytest.approx(r["step_ms_median"] / equal["step_ms_median"])
        assert r["max_time_ratio_vs_equal"] == pytest.approx(r["step_ms_max"] / equal["step_ms_max"])
        assert r["peak_memory_mib"] is None and r["memory_ratio_vs_equal"] is None  # not measured on the CPU
    assert equal["time_ratio_vs_equal"] == equal["max_time_ratio_vs_equal"] == 1.0
    stl, mtl = trained["balancers"]["stl"]["parameters"], equal["parameters"]
    assert stl > mtl  # stl trained one network per task
    assert trained["paper_table_iii"]["gradnorm_time_ratio_vs_equal"] == 7.2
    assert trained["paper_table_iii"]["gradnorm_memory_ratio_vs_equal"] == 8.5


@pytest.mark.slow
def test_the_distributed_smoke_test_all_reduces_over_gloo(cpu_check):
    results, _, _ = cpu_check
    assert results["distributed"] == {
        "passed": True,
        "error": None,
        "backend": "gloo",
        "world_size": 1,
        "all_reduce": [1.0, 2.0, 3.0, 4.0],
    }


@pytest.mark.slow
def test_predict_gives_every_task_its_shape_for_the_multi_task_and_stl_models(cpu_check):
    results, _, _ = cpu_check
    size = results["training"]["image_size"]
    tasks = build_tasks(load_params(ROOT / "params.yaml"))
    expected = {
        t.name: [t.out_channels]
        if t.kind == "classification"
        else [size, size]
        if t.kind == "binary_segmentation"
        else [t.out_channels, size, size]
        for t in tasks
    }
    assert results["predict"]["passed"], results["predict"]["error"]
    for name in ("multi_task", "stl"):
        model = results["predict"]["models"][name]
        assert model["output_shapes"] == expected
        assert all(shape == [size, size] for shape in model["mask_shapes"].values())
        assert all(len(classes) == model["images"] for classes in model["classes"].values())


@pytest.mark.slow
def test_the_cpu_run_reports_its_auto_precision_prints_every_check_and_removes_its_checkpoints(cpu_check):
    results, printed, folder = cpu_check
    env = results["environment"]
    expected = "bf16" if env["bf16_native"] else "off"  # train.amp = auto on this CPU
    assert env["device"] == "cpu" and env["precision"] == expected and env["torch"] == torch.__version__
    assert results["training"]["precision"] == expected
    for line in ("gpu-check on cpu", "distributed: passed", "training: passed", "predict: passed (stl"):
        assert line in printed, line
    assert (folder / "gpu_check.json").exists() and not list(folder.glob("mtl-gpu-check-*"))  # checkpoints gone


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_fails_with_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert main(["--params", str(ROOT / "params.yaml"), "gpu-check", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: gpu-check --device cuda: ") and "no CUDA device" in err
    assert not out.exists()


@pytest.mark.slow
def test_a_failed_check_fails_the_command_with_one_line_after_writing_the_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(gpu_check.BACKENDS, "cpu", "nccl")  # this CPU build of torch has no NCCL
    monkeypatch.setattr(gpu_check, "BALANCERS", ("equal",))  # the least training that still runs every check
    monkeypatch.setitem(gpu_check.SIZES, "cpu", gpu_check.CheckSize(32, 2, 1, 1))
    out = tmp_path / "gpu_check.json"
    assert main(["--params", str(ROOT / "params.yaml"), "gpu-check", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: gpu-check on cpu: distributed failed: ")
    results = json.loads(out.read_text())
    assert not results["passed"] and not results["distributed"]["passed"]
    assert results["training"]["passed"] and results["predict"]["passed"]  # the other checks still ran
