"""The promote stage against a real sqlite-backed MLflow registry: a first model with no champion, a better
one (the champion, trained on another split, is re-scored on the current one), a re-run, a tie and a worse one;
fold models and fold ensembles each gated as what they are.

Models have known outputs: "good" marks every pixel lesion and predicts the test split's majority class,
"bad" marks none and predicts the minority class (every tiny image has a lesion, so its Dice is 0).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.folds import load_test
from pipeline.registry.gate import flat_metrics
from pipeline.runtime.device import to_tensors
from pipeline.runtime.inference import evaluate
from pipeline.tasks import build_tasks
from pipeline.tracking import child_run, stage_run
from tests.conftest import build_data, isolated_mlflow, tiny_params
from tests.registry.conftest import (
    MODEL_NAME,
    constant_model,
    mean_probabilities,
    promote,
    registry_params,
    spread_model,
    write_checkpoints,
)


def _state(client: MlflowClient) -> dict:
    experiment = client.get_experiment_by_name("registry-test")
    return {
        "versions": sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL_NAME}'")),
        "aliases": dict(client.get_registered_model(MODEL_NAME).aliases),
        "promote_runs": len(client.search_runs([experiment.experiment_id], "tags.stage = 'promote'")),
    }


def _test_metrics(params, model, data) -> dict[str, float]:
    _, metrics = evaluate(model, build_tasks(params), load_test(data), 8, torch.device("cpu"))
    return {m: value for m, value in flat_metrics(metrics).items() if m in params.registry.metric_names()}


@pytest.fixture(scope="module")
def history(tmp_path_factory, tiny_data):
    tmp = tmp_path_factory.mktemp("promote")
    other_split = build_data(tiny_params(split={"test_fraction": 0.5}), tmp / "other_data")
    with isolated_mlflow():
        params = registry_params(tmp)
        labels = np.asarray(load_test(tiny_data).read(np.arange(len(load_test(tiny_data))))["label"])
        majority = int(np.bincount(labels, minlength=2).argmax())
        good, bad = constant_model(params, 20.0, majority), constant_model(params, -20.0, 1 - majority)
        with (
            stage_run(params, "train", "equal", tiny_data) as parent,
            child_run(parent, "equal", 0, outage_s=params.tracking.outage_s) as train_run,
        ):
            pass
        client = MlflowClient()
        steps = {}
        for step, work, data, model, epoch in (
            ("first", "a", other_split, bad, 0),
            ("better", "b", tiny_data, good, 0),
            ("again", "b", tiny_data, None, 0),
            ("tie", "c", tiny_data, good, 1),
            ("worse", "d", tiny_data, bad, 1),
        ):
            document = promote(params, tmp / work, data, model, epoch)
            steps[step] = {
                "document": document,
                "report": (tmp / work / "promotion.json").read_bytes(),
                "state": _state(client),
                "work": tmp / work,
            }
        yield {
            "steps": steps,
            "params": params,
            "client": client,
            "good": good,
            "bad": bad,
            "data": tiny_data,
            "train_run": train_run,
        }


def test_first_model_is_promoted_when_there_is_no_champion_and_floors_pass(history):
    first = history["steps"]["first"]
    assert first["document"]["decision"] == "promoted"
    assert first["state"]["aliases"] == {"champion": 1, "challenger": 1}
    assert first["document"]["previous_champion"] is None


def test_better_model_takes_champion_against_the_champion_rescored_on_the_same_split(history):
    params, step = history["params"], history["steps"]["better"]
    document = step["document"]
    assert document["decision"] == "promoted" and document["champion"] == "2"
    assert step["state"]["aliases"] == {"champion": 2, "challenger": 2}
    rescored = _test_metrics(params, history["bad"], history["data"])
    assert document["previous_champion"] == {
        "version": "1",
        "package": "ensemble",
        "folds": [0],
        "test": rescored,
        "test_score": pytest.approx(np.mean(list(rescored.values()))),
    }
    # version 1 was promoted on another split, where the same model scores differently
    assert history["steps"]["first"]["document"]["candidate"]["test"] != rescored
    assert document["candidate"]["test"] == _test_metrics(params, history["good"], history["data"])
    assert json.loads(step["report"]) == document


def test_rerun_without_a_new_model_changes_nothing(history):
    before, again = history["steps"]["better"], history["steps"]["again"]
    assert again["report"] == before["report"]
    assert again["state"] == before["state"]  # no new version, alias move or promote run


def test_tie_within_min_improvement_is_refused_and_champion_stays(history):
    tie = history["steps"]["tie"]
    assert tie["document"]["decision"] == "refused"
    assert tie["document"]["candidate"]["test_score"] == tie["document"]["previous_champion"]["test_score"]
    assert any("does not beat the champion's" in r for r in tie["document"]["reasons"])
    assert tie["state"]["aliases"] == {"champion": 2, "challenger": 3}
    assert tie["state"]["versions"] == [1, 2, 3]


def test_worse_model_is_refused_and_champion_stays(history):
    worse = history["steps"]["worse"]
    assert worse["document"]["decision"] == "refused"
    assert worse["state"]["aliases"] == {"champion": 2, "challenger": 4}
    assert (
        mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion").metadata.run_id
        == (history["steps"]["better"]["document"]["promote_run_id"])
    )


def test_version_records_its_checkpoint_training_run_and_decision(history):
    client, step = history["client"], history["steps"]["better"]
    version = client.get_model_version(MODEL_NAME, "2")
    checkpoint = step["work"] / "models" / "equal" / "fold_0" / "best.pt"
    candidate = step["document"]["candidate"]
    assert candidate["checkpoints_sha256"] == [hashlib.sha256(checkpoint.read_bytes()).hexdigest()]
    assert version.tags["checkpoint_sha256"] == candidate["checkpoint_sha256"]
    assert (version.tags["package"], version.tags["balancer"], version.tags["folds"]) == ("ensemble", "equal", "0")
    assert version.tags["source_run_ids"] == history["train_run"] == candidate["source_run_ids"][0]
    assert version.tags["decision"] == "promoted"
    assert json.loads(version.tags["promotion_report"]) == step["document"]
    assert version.run_id == step["document"]["promote_run_id"]
    assert client.get_run(version.run_id).data.tags["stage"] == "promote"


def _direct_scores(models, test, images) -> dict[str, float]:
    """``lesion.dice`` and ``diagnosis.accuracy`` of the mean probabilities of ``models`` on ``test``,
    computed here: a pixel is lesion where the mean probability exceeds 0.5, Dice per image (1 when mask and
    prediction are both empty) averaged over images, the class is the arg-max of the mean probabilities."""
    mean = mean_probabilities(models, images)
    arrays = test.read(np.arange(len(test)))
    truth, predicted = arrays["mask"] > 0, mean["lesion"] > 0.5
    tp, fp, fn = ((a & b).sum(axis=(1, 2)) for a, b in ((predicted, truth), (predicted, ~truth), (~predicted, truth)))
    dice = np.where(tp + fp + fn == 0, 1.0, 2 * tp / np.maximum(2 * tp + fp + fn, 1))
    return {
        "lesion.dice": float(dice.mean()),
        "diagnosis.accuracy": float((mean["diagnosis"].argmax(axis=1) == arrays["label"]).mean()),
    }


@pytest.fixture(scope="module")
def packages(tmp_path_factory, tiny_data):
    """Folds 0 and 1 of ``equal`` (fold 0 the better on validation), promoted to two registered models: to
    ``fold-first`` as the fold model, then as the ensemble; to ``ensemble-first`` the other way round."""
    tmp = tmp_path_factory.mktemp("packages")
    test = load_test(tiny_data)
    images = to_tensors(test.read(np.arange(len(test))), torch.device("cpu"))["image"]
    base = registry_params(tmp, train={"folds": [0, 1]})
    members = [spread_model(base, seed, images) for seed in (3, 4)]
    write_checkpoints(tmp / "work", dict(enumerate(members)))
    documents = {}
    with isolated_mlflow():
        for name, order in (("fold-first", ("fold", "ensemble")), ("ensemble-first", ("ensemble", "fold"))):
            for package in order:
                registry = {"model_name": name, "package": package}
                params = registry_params(tmp, train={"folds": [0, 1]}, registry=registry)
                documents[name, package] = promote(params, tmp / "work", tiny_data)
        downloaded = mlflow.artifacts.download_artifacts("models:/fold-first/2", dst_path=str(tmp / "download"))
    mean = mean_probabilities(members, images)
    assert np.abs(mean["lesion"] - 0.5).min() > 1e-5 and np.abs(mean["diagnosis"] - 0.5).min() > 1e-3  # no ties
    yield {
        "documents": documents,
        "work": tmp / "work",
        "downloaded": Path(downloaded),
        "scores": {
            "fold 0": _direct_scores(members[:1], test, images),
            "fold 1": _direct_scores(members[1:], test, images),
            "ensemble": _direct_scores(members, test, images),
        },
    }


def test_an_ensemble_is_gated_by_its_mean_probabilities_against_a_fold_champion_scored_as_a_fold_model(packages):
    scores = packages["scores"]
    assert scores["ensemble"] not in (scores["fold 0"], scores["fold 1"])  # the three are told apart
    first = packages["documents"]["fold-first", "fold"]["candidate"]
    assert (first["package"], first["folds"], first["test"]) == ("fold", [0], pytest.approx(scores["fold 0"]))
    document = packages["documents"]["fold-first", "ensemble"]
    candidate, champion = document["candidate"], document["previous_champion"]
    assert (candidate["package"], candidate["balancer"], candidate["folds"]) == ("ensemble", "equal", [0, 1])
    assert candidate["test"] == pytest.approx(scores["ensemble"])
    assert candidate["test_score"] == pytest.approx(np.mean(list(scores["ensemble"].values())))
    assert (champion["version"], champion["package"], champion["folds"]) == ("1", "fold", [0])
    assert champion["test"] == pytest.approx(scores["fold 0"])
    assert champion["test_score"] == pytest.approx(np.mean(list(scores["fold 0"].values())))
    assert f"the champion's {champion['test_score']:.4f}" in document["reasons"][-1]


def test_a_fold_model_is_gated_against_an_ensemble_champion_scored_as_the_ensemble(packages):
    scores = packages["scores"]
    first = packages["documents"]["ensemble-first", "ensemble"]
    assert first["decision"] == "promoted" and first["previous_champion"] is None
    assert first["candidate"]["test"] == pytest.approx(scores["ensemble"])
    document = packages["documents"]["ensemble-first", "fold"]
    candidate, champion = document["candidate"], document["previous_champion"]
    assert (candidate["package"], candidate["folds"]) == ("fold", [0])
    assert candidate["test"] == pytest.approx(scores["fold 0"])
    assert (champion["version"], champion["package"], champion["folds"]) == ("1", "ensemble", [0, 1])
    assert champion["test"] == pytest.approx(scores["ensemble"])


def test_the_registered_ensemble_holds_every_fold_checkpoint(packages):
    candidate = packages["documents"]["fold-first", "ensemble"]["candidate"]
    files = [packages["work"] / "models" / "equal" / f"fold_{k}" / "best.pt" for k in (0, 1)]
    digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in files]
    assert candidate["checkpoints"] == [str(path) for path in files] and candidate["checkpoints_sha256"] == digests
    stored = (packages["downloaded"] / "artifacts").rglob("*.pt")
    assert sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in stored) == sorted(digests)
