"""The ``promote`` stage: register the best validated fold model or fold ensemble in the MLflow model
registry and move the ``champion`` alias to it when it passes the gate (aliases, not the deprecated
registry stages).

1. The candidate is the ``registry.package`` with the best validation primary score
   (:mod:`pipeline.registry.candidate`; selecting on test would leak the test set): the (balancer, fold)
   checkpoint (``fold``), or the fold checkpoints of the best balancer over its folds (``ensemble``).
2. Unless a version of ``registry.model_name`` already packages those checkpoints (same
   :func:`~pipeline.registry.candidate.package_sha256`), they are logged as one pyfunc model
   (:mod:`pipeline.registry.pyfunc`; an ensemble averages its members' probabilities) in a ``promote``
   MLflow run and registered as a new version, tagged with its package, balancer, folds, checkpoints,
   package sha256, the training runs that made them and the data version.
3. Candidate and current champion are each scored *as registered* on the current test split
   (:mod:`pipeline.registry.scoring`): an ensemble by its averaged probabilities, a fold model by its
   own, whichever of the two either of them is, so each score is that of the model that would be served.
   :func:`pipeline.registry.gate.decide` compares these two scores. The version gets the alias
   ``challenger``, and ``champion`` too when the gate passes.
4. The decision and its reasons are recorded before any alias moves: as tags of the version (``decision``,
   ``decision_reasons``, ``promotion_report``), as tags and the artifact ``promotion.json`` of the ``promote``
   run, and in ``report`` (``reports/promotion.json``, atomically). Only then does the version get the alias
   ``challenger``, and ``champion`` too when the gate passes; last, its tag ``promotion_state`` turns from
   ``pending`` (set when it is registered or re-gated) to ``complete``.

Re-running changes nothing while nothing it depends on changed: when the candidate's version is complete and
holds a decision made with the same gate params, on the same data version, and ``champion`` still points
where that decision left it, the recorded report is written again and no run, version, alias or tag is
touched. Otherwise the existing version is gated again (no new version).

A driver killed at any point (SIGKILL, a lost node) leaves no alias on a version without its report, and no
second version of the candidate. A rerun finds the candidate's ``pending`` version and finishes it: when it
holds a decision that still stands (same gate params and data version, and ``champion`` where the decision
found it or where it put it), the rerun writes that report, moves the aliases the decision gives and marks
the version complete, without a new run or any scoring; a pending version without a decision, or with one
that no longer stands, is gated again. The ``promote`` runs the killed driver left RUNNING (the one that
registered the version and the one that recorded its decision) are marked KILLED. A driver killed between
logging the model and registering it leaves that model in its run and no version; the rerun registers anew.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from pipeline.atomic import atomic_write_json
from pipeline.balancers import check_methods
from pipeline.config import Params
from pipeline.data.folds import ArraySet, load_test
from pipeline.registry.candidate import Candidate, file_sha256, package_sha256, select_candidate
from pipeline.registry.gate import Decision, decide
from pipeline.registry.scoring import score_on_test
from pipeline.registry.store import (
    CHALLENGER,
    CHAMPION,
    CHECKPOINT_TAG,
    PACKAGE_TAG,
    aliases,
    load_model,
    log_model,
    version_of_checkpoint,
)
from pipeline.runtime.device import to_tensors
from pipeline.tracking import connect, lineage_tags, stage_run

REPORT_TAG = "promotion_report"
STATE_TAG = "promotion_state"
PENDING, COMPLETE = "pending", "complete"


def run(params: Params, models_dir: Path, metrics_dir: Path, data_root: Path, report: Path) -> dict[str, Any]:
    """Promote (or not) the best validated fold model or ensemble; write and return the report document."""
    check_methods(params)
    name = params.registry.model_name
    candidate = select_candidate(params, models_dir, metrics_dir)
    digests = [file_sha256(path) for path in candidate.checkpoints]
    sha256 = package_sha256(candidate.package, digests)
    connect(params)
    client = MlflowClient()
    version = version_of_checkpoint(client, name, sha256)
    recorded = json.loads(version.tags[REPORT_TAG]) if version and REPORT_TAG in version.tags else None
    pending = version is not None and version.tags.get(STATE_TAG) == PENDING
    if version is not None and pending:
        _end_killed_runs(client, version, recorded)
    now = {
        "data_version": lineage_tags(params, data_root)["data_version"],
        "gate": params.registry.model_dump(mode="json"),
    }
    if recorded is not None and _stands(recorded, now, aliases(client, name).get(CHAMPION), pending):
        document = recorded
        if pending:
            _apply(client, document, report)
        else:
            atomic_write_json(report, document)
    else:
        with stage_run(params, "promote", None, data_root) as promote_run:
            document = _decide(params, client, candidate, digests, version, data_root, promote_run.info.run_id)
            _apply(client, document, report)
    _print(document)
    return document


def _stands(recorded: dict[str, Any], now: dict[str, Any], champion: str | None, pending: bool) -> bool:
    """Whether the ``recorded`` decision still holds: made with ``now``'s gate params on its data version, and
    the ``champion`` alias where the decision left it or, while the version is ``pending`` (its driver was
    killed before it moved the aliases, or while it did), where the decision found it."""
    same = all(recorded.get(key) == value for key, value in now.items())
    places = {recorded["champion"]}
    if pending:
        previous = recorded["previous_champion"]
        places.add(previous["version"] if previous else None)
    return same and champion in places


def _decide(
    params: Params,
    client: MlflowClient,
    candidate: Candidate,
    digests: list[str],
    version: ModelVersion | None,
    data_root: Path,
    run_id: str,
) -> dict[str, Any]:
    """Register the candidate (``digests``: its checkpoints' sha256) unless ``version`` packages it already,
    gate it and record the decision (:func:`_record`); no alias moves here."""
    name = params.registry.model_name
    sha256 = package_sha256(candidate.package, digests)
    data_version = client.get_run(run_id).data.tags["data_version"]
    test = load_test(data_root)
    if version is None:
        version = _register(params, client, candidate, sha256, test, data_version)
    number = str(version.version)
    scores = score_on_test(load_model(f"models:/{name}/{number}"), f"version {number}", params, test)
    champion = aliases(client, name).get(CHAMPION)
    previous = None
    if champion is not None and champion != number:
        model = load_model(f"models:/{name}/{champion}")
        previous = {
            "version": champion,
            **_package(client.get_model_version(name, champion)),
            "test": score_on_test(model, f"the champion (version {champion})", params, test),
        }
    decision = decide(scores, None if previous is None else previous["test"], params.registry)
    shown = params.registry.metric_names()
    document = {
        "model_name": name,
        "version": number,
        "decision": "promoted" if decision.promote else "refused",
        "reasons": list(decision.reasons),
        "champion": number if decision.promote else champion,
        "candidate": {
            "package": candidate.package,
            "balancer": candidate.balancer,
            "folds": list(candidate.folds),
            "checkpoints": [str(path) for path in candidate.checkpoints],
            "checkpoints_sha256": digests,
            CHECKPOINT_TAG: sha256,
            "source_run_ids": _tag_list(version, "source_run_ids", "source_run_id"),
            "selected_on": "validation",
            "validation": {m: candidate.validation[m] for m in shown},
            "validation_score": candidate.score,
            "test": {m: scores[m] for m in shown},
            "test_score": decision.candidate_score,
        },
        "previous_champion": None
        if previous is None
        else previous
        | {
            "test": {m: previous["test"][m] for m in shown},
            "test_score": decision.champion_score,
        },
        "gate": params.registry.model_dump(mode="json"),
        "data_version": data_version,
        "promote_run_id": run_id,
    }
    _record(client, document, decision)
    return document


def _register(
    params: Params, client: MlflowClient, candidate: Candidate, sha256: str, test: ArraySet, data_version: str
) -> ModelVersion:
    """Log the candidate's pyfunc model to the active run and register it as a new version."""
    example = to_tensors(test.read([0]), torch.device("cpu"))["image"].numpy()
    info = log_model(params, candidate.checkpoints, example, candidate.balancer)
    registered = mlflow.register_model(
        info.model_uri,
        params.registry.model_name,
        tags={
            PACKAGE_TAG: candidate.package,
            "balancer": candidate.balancer,
            "folds": ",".join(map(str, candidate.folds)),
            "checkpoints": ",".join(map(str, candidate.checkpoints)),
            CHECKPOINT_TAG: sha256,
            "source_run_ids": ",".join(
                _training_run(client, candidate.balancer, k, data_version) for k in candidate.folds
            ),
            "data_version": data_version,
            "selected_on": "validation",
            STATE_TAG: PENDING,
        },
    )
    return client.get_model_version(params.registry.model_name, registered.version)


def _record(client: MlflowClient, document: dict[str, Any], decision: Decision) -> None:
    """The decision as tags of the version (marked pending first) and of the active promote run, with its
    scores and the report."""
    name, number = document["model_name"], document["version"]
    for key, value in (
        (STATE_TAG, PENDING),
        ("decision", document["decision"]),
        ("decision_reasons", "; ".join(decision.reasons)),
        (REPORT_TAG, json.dumps(document, sort_keys=True)),
    ):
        client.set_model_version_tag(name, number, key, value)
    mlflow.set_tags({"registered_model": name, "model_version": number, "decision": document["decision"]})
    mlflow.log_metric("candidate_test_score", decision.candidate_score)
    if decision.champion_score is not None:
        mlflow.log_metric("champion_test_score", decision.champion_score)
    mlflow.log_dict(document, "promotion.json")


def _apply(client: MlflowClient, document: dict[str, Any], report: Path) -> None:
    """Write ``report``, give the version the aliases its recorded decision gives, then mark it complete."""
    atomic_write_json(report, document)
    name, number = document["model_name"], document["version"]
    client.set_registered_model_alias(name, CHALLENGER, number)
    if document["decision"] == "promoted":
        client.set_registered_model_alias(name, CHAMPION, number)
    client.set_model_version_tag(name, number, STATE_TAG, COMPLETE)


def _end_killed_runs(client: MlflowClient, version: ModelVersion, recorded: dict[str, Any] | None) -> None:
    """Mark KILLED the promote runs of a pending ``version`` that were left RUNNING: the one that registered it
    and the one that ``recorded`` its decision."""
    for run_id in {i for i in (version.run_id, (recorded or {}).get("promote_run_id")) if isinstance(i, str)}:
        if client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def _package(version: ModelVersion) -> dict[str, Any]:
    """``{"package", "folds"}`` of a registered version, from its tags (a version registered before fold
    ensembles existed is a fold model)."""
    folds = [int(k) for k in _tag_list(version, "folds", "fold")]
    return {"package": version.tags.get(PACKAGE_TAG, "fold"), "folds": folds}


def _tag_list(version: ModelVersion, name: str, before: str) -> list[str]:
    """The comma-separated tag ``name`` of ``version`` as a list; a version registered before fold ensembles
    existed has the one-valued tag ``before`` instead."""
    return version.tags.get(name, version.tags.get(before, "")).split(",")


def _training_run(client: MlflowClient, balancer: str, fold: int, data_version: str) -> str:
    """The latest finished train-stage run of ``balancer`` and ``fold`` on this data version."""
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("promote: looking for training runs outside the promote run")
    runs = client.search_runs(
        [active.info.experiment_id],
        filter_string=(
            f"tags.stage = 'train' and tags.balancer = '{balancer}' and tags.fold = '{fold}' "
            f"and tags.data_version = '{data_version}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else "not found"


def _print(document: dict[str, Any]) -> None:
    c = document["candidate"]
    print(
        f"promote: {document['model_name']} version {document['version']} "
        f"({c['package']} of {c['balancer']} folds {c['folds']}) "
        f"{document['decision']}; champion: {'version ' + document['champion'] if document['champion'] else 'none'}"
    )
    for reason in document["reasons"]:
        print(f"  - {reason}")
