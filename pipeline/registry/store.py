"""The MLflow registry side of promotion and prediction: logging the pyfunc model, finding a version by
its checkpoint, reading aliases, and loading a model URI with errors that say what is missing.

Versions of the registered model carry the tag :data:`CHECKPOINT_TAG` (the sha256 of what they package,
:func:`pipeline.registry.candidate.package_sha256`), which is how ``promote`` recognises a fold model or
ensemble it registered before, and :data:`PACKAGE_TAG` (``fold`` or ``ensemble``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient

import pipeline
from pipeline.config import Params
from pipeline.errors import PipelineError
from pipeline.registry.pyfunc import MultiTaskPyfunc, member_keys, model_config, model_params
from pipeline.tracking.redaction import redact

CHAMPION = "champion"
CHALLENGER = "challenger"
CHECKPOINT_TAG = "checkpoint_sha256"
PACKAGE_TAG = "package"
MODEL_CODE = Path(__file__).with_name("model_code.py")
REQUIREMENTS = ("mlflow", "torch", "monai", "numpy", "pandas", "pydantic", "pyyaml")
"""Distributions the served model imports (through the ``pipeline`` code logged with it)."""
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


def log_model(params: Params, checkpoints: Sequence[Path], example: np.ndarray, balancer: str = "equal") -> ModelInfo:
    """Log ``checkpoints`` (one: a fold model; several: their fold ensemble) as the pyfunc model ``model``
    of the active run; every checkpoint file is an artifact of the model.

    ``example``: one preprocessed image ``(1, C, S, S)`` float32, stored as the input example; the
    signature fixes ``C`` and ``S`` (any batch size). The ``pipeline`` package is logged with the model.
    ``balancer``: the method whose network the checkpoints hold.
    """
    config = model_config(params, balancer, len(checkpoints))
    outputs = MultiTaskPyfunc().load(model_params(config), checkpoints, balancer).predict(None, example)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),
        artifacts=dict(zip(member_keys(len(checkpoints)), map(str, checkpoints), strict=True)),
        model_config=config,
        code_paths=[str(Path(pipeline.__file__).parent)],
        signature=infer_signature(example, outputs),
        input_example=example,
        pip_requirements=[f"{name}=={installed_version(name).split('+')[0]}" for name in REQUIREMENTS],
    )


def version_of_checkpoint(client: MlflowClient, name: str, sha256: str) -> ModelVersion | None:
    """The oldest version of registered model ``name`` whose :data:`CHECKPOINT_TAG` is ``sha256``."""
    found = client.search_model_versions(f"name = '{name}' and tags.{CHECKPOINT_TAG} = '{sha256}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """``{alias: version number as a string}`` of registered model ``name``; empty when it is not registered yet."""
    try:
        return {alias: str(number) for alias, number in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise


def load_model(uri: str) -> PyFuncModel:
    """Load the model at ``uri`` (``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/...``).

    A registered model, alias or version that does not exist, or a model that ``promote`` did not
    make, raises PipelineError naming it (and, for a missing alias or name, what does exist).
    """
    match = _MODELS_URI.match(uri)
    if match:
        _check_registered(uri, match["name"], match["alias"])
    try:
        model = mlflow.pyfunc.load_model(uri)
        wrapped = model.unwrap_python_model()
    except (MlflowException, OSError) as exc:
        raise PipelineError(f"model {uri}: cannot load it ({redact(str(exc))})") from None
    if not isinstance(wrapped, MultiTaskPyfunc):
        raise PipelineError(f"model {uri}: not a multi-task model registered by `mtl-pipeline promote`")
    return model


def _check_registered(uri: str, name: str, alias: str | None) -> None:
    client = MlflowClient()
    where = redact(mlflow.get_registry_uri())
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise PipelineError(f"model {uri}: {redact(exc.message)}") from None
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise PipelineError(
            f"model {uri}: no registered model {name!r} in {where} (registered: {known}); "
            "run `mtl-pipeline promote` or pass --model-uri"
        ) from None
    if alias is not None and alias not in model.aliases:
        raise PipelineError(
            f"model {uri}: registered model {name!r} has no alias {alias!r} (aliases: {sorted(model.aliases)}); "
            "run `mtl-pipeline promote` or pass --model-uri"
        )
