"""End of a fold: summary metrics, the model, plots and the history table, logged to its child run."""

from __future__ import annotations

import copy
import csv
import functools
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import mlflow.pytorch
import torch
from mlflow.entities import RunTag
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from pipeline.tracking.epochs import numeric_metrics
from pipeline.tracking.plots import task_weights_figure, val_loss_figure
from pipeline.tracking.retry import retried

if TYPE_CHECKING:
    from pipeline.train.loop import FoldResult


def log_fold_result(
    run_id: str,
    result: FoldResult,
    model: torch.nn.Module,
    example: torch.Tensor,
    test_metrics: dict[str, dict[str, float]],
    *,
    outage_s: float,
    log_model: bool = True,
) -> None:
    """Log a finished fold to run ``run_id`` (the fold's child run; it need not be the active run).

    Metrics, all at ``step = result.best_epoch``: ``best_val/<task>/<metric>``, ``test/<task>/<metric>``,
    ``efficiency/<figure>``, ``best_epoch``, ``best_val_loss``, ``epochs_run``. Artifacts: ``history.csv``,
    ``plots/task_weights.png``, ``plots/val_loss.png`` and, when ``log_model`` (pass
    ``params.tracking.log_models``), the MLflow PyTorch model ``model``: a CPU copy of ``model`` (pass
    the best-epoch weights, unwrapped from DDP) in eval mode, exported with ``torch.export`` ("pt2": a
    self-contained graph that loads without this package and without unpickling code) for inputs
    ``(B, C, H, W)`` float32 of any batch size B and the image size of ``example`` ``(1, C, H, W)``;
    outputs ``{task: logits}``; signature and input example come from ``example`` (repeated to a batch of 2).

    The metrics and the small artifacts ride out an outage of the server of up to ``outage_s`` seconds
    (``tracking.outage_s``, see :func:`~pipeline.tracking.retry.retried`); the model, several requests that
    are not safe to repeat as a whole, relies on MLflow's own per-request retries.
    """
    if example.ndim != 4 or example.shape[0] != 1 or example.dtype != torch.float32:
        raise ValueError(f"example must be a float32 tensor (1, C, H, W), got {example.dtype} {tuple(example.shape)}")
    client = MlflowClient()
    call = functools.partial(retried, uri=client.tracking_uri, outage_s=outage_s)
    summary: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(result.history),
        **_nested("best_val", result.val_metrics),
        **_nested("test", test_metrics),
        **{f"efficiency/{k}": v for k, v in result.efficiency.items()},
    }
    metrics = numeric_metrics(summary, step=result.best_epoch)
    tags = [RunTag("compute_format", result.compute_format)] if result.compute_format else []
    call(
        lambda: client.log_batch(run_id, metrics=metrics, tags=tags),
        what=f"logging the summary metrics of run {run_id}",
    )
    table = history_csv(result.history)
    call(lambda: client.log_text(run_id, table, "history.csv"), what=f"logging history.csv to run {run_id}")
    for figure, artifact in (
        (task_weights_figure(result.history), "plots/task_weights.png"),
        (val_loss_figure(result.history), "plots/val_loss.png"),
    ):
        call(functools.partial(client.log_figure, run_id, figure, artifact), what=f"logging {artifact} to run {run_id}")
    if log_model:
        _log_model(run_id, model, example, step=result.best_epoch)


def _log_model(run_id: str, model: torch.nn.Module, example: torch.Tensor, step: int) -> None:
    cpu_model = copy.deepcopy(model).cpu().eval()
    batch = example.detach().cpu().repeat(2, 1, 1, 1)  # torch.export fixes a size-1 batch dimension
    with torch.no_grad():
        outputs = {task: logits.numpy() for task, logits in cpu_model(batch).items()}
    mlflow.pytorch.log_model(
        cpu_model,
        name="model",
        signature=infer_signature(batch.numpy(), outputs),
        input_example=batch.numpy(),
        serialization_format="pt2",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # all a pt2 graph needs
        run_id=run_id,
        step=step,
        # MLflow's pyfunc wrapper of PyTorch models serves one output tensor, not {task: logits}:
        # its serving check could only warn, after loading the model once more.
        validate_serving_input=False,
    )


def history_csv(history: Sequence[dict[str, Any]]) -> str:
    """The history records as CSV text, one row per record; columns in first-seen order, None as empty."""
    columns = list(dict.fromkeys(k for record in history for k in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _nested(prefix: str, metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{prefix}/{task}/{name}": value for task, values in metrics.items() for name, value in values.items()}
