"""What a training run is: one digest of exactly the params it trains on.

The checkpoint fingerprint (a resumed fold ignores checkpoints of another run), the Ray Train run name (a re-run
of the same job resumes its snapshot) and the Ray Tune sweep name all derive from :func:`run_identity`, so the
three agree on when two runs are the same. The identity covers every param ``dvc.yaml`` declares for the
``train`` and ``tune`` stages, so a stage that DVC re-runs for a changed param never resumes a stale checkpoint.
"""

from __future__ import annotations

import hashlib
import json

from pipeline.balancers import balancer_class
from pipeline.config import Params

# Where a run executes and what is done with it afterwards, not what it trains on (a run's results do not depend
# on the worker count, see pipeline/train/distributed.py): never part of an identity.
_NOT_TRAINED_ON = {"ray": True, "tracking": True, "evaluate": True, "registry": True}


def run_identity(params: Params, balancer: str | None) -> str:
    """Hex SHA-256 of the params a run of ``balancer`` trains on.

    ``balancer`` given: a training run. Its own ``balancer.<name>`` settings count, other balancers' settings,
    ``train.balancers`` (which other stages exist) and the ``tune`` section (the sweep that picked the settings,
    already merged into ``params``) do not. ``None``: a sweep of ``tune.balancer``: the ``tune`` section counts,
    and of the balancers' settings only the swept one's that the grid does not set.
    """
    excluded: dict = {**_NOT_TRAINED_ON, "train": {"balancers"}} | ({} if balancer is None else {"tune": True})
    document = params.model_dump(mode="json", exclude=excluded)
    name = params.tune.balancer if balancer is None else balancer
    # the balancer's settings as validated, so a default left out of the file and one written agree
    settings = balancer_class(name).settings_model.of(params, name).model_dump(mode="json")
    swept = set(params.tune.grid) if balancer is None else set()
    document["balancer"] = {name: {key: value for key, value in settings.items() if key not in swept}}
    ordered = {key: document[key] for key in type(params).model_fields if key in document}
    return hashlib.sha256(json.dumps(ordered, separators=(",", ":")).encode()).hexdigest()


def ray_run_name(params: Params, balancer: str, fold: int) -> str:
    """A Ray Train run name that is the same exactly when the job is (:func:`run_identity`): re-running the stage
    with the same params resumes that run's checkpoints; other params start a new run."""
    return f"{balancer}-fold{fold}-{run_identity(params, balancer)[:12]}"
