"""``predict`` with the registered champion: the masks of direct evaluation (of the checkpoint, or the mean of
a fold ensemble's checkpoints), original-size outputs, per-file errors that do not stop the batch, and a missing
model reported before any image is read."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.data.folds import load_test
from pipeline.data.manifest import read_manifest
from pipeline.errors import PipelineError
from pipeline.registry import predict
from pipeline.registry.predictor import load_predictor
from pipeline.runtime.device import to_tensors
from tests.conftest import isolated_mlflow
from tests.registry.conftest import (
    MODEL_NAME,
    mean_probabilities,
    promote,
    registry_params,
    seeded_model,
    spread_model,
    write_checkpoints,
)

CHAMPION = f"models:/{MODEL_NAME}@champion"
MODEL_ENSEMBLE = "tiny-ensemble"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, tiny_data):
    """An untrained model promoted to champion, its lesion bias shifted so that about 30 % of the test pixels
    are lesion, with no logit within 1e-4 of 0 (where float32 probabilities round to 0.5); the raw files of
    the test split, in test order."""
    tmp = tmp_path_factory.mktemp("predict")
    test = load_test(tiny_data)
    with isolated_mlflow():
        params = registry_params(tmp)
        model = seeded_model(params, seed=3)
        weight, bias = model.task_parameters("lesion")[-2:]  # the output layer
        with torch.no_grad():
            weight.mul_(1000)  # untrained logits are about 1e-3
            bias.mul_(1000)
            images = to_tensors(test.read(np.arange(len(test))), torch.device("cpu"))["image"]
            logits = model(images)["lesion"].flatten().sort().values
            start, stop = int(0.6 * len(logits)), int(0.8 * len(logits))
            k = start + int(logits[start:stop].diff().argmax())  # the widest gap near the 70 % quantile
            bias.sub_((logits[k] + logits[k + 1]) / 2)
            assert model(images)["lesion"].abs().min() > 1e-4
        promote(params, tmp / "work", tiny_data, model)
        params_file = tmp / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
        by_id = {r.id: r.image for r in read_manifest(tiny_data / "ingested").records}
        files = [tiny_data / "ingested" / by_id[i] for i in test.ids]
        yield {
            "params": params,
            "params_file": params_file,
            "model": model,
            "files": files,
            "tmp": tmp,
            "predictor": load_predictor(CHAMPION),
        }


def test_champion_masks_equal_direct_evaluation_of_the_checkpoint(champion, tiny_data):
    predictor, test = champion["predictor"], load_test(tiny_data)
    batch = to_tensors(test.read(np.arange(len(test))), torch.device("cpu"))
    inputs = np.stack([predictor.read(path).image for path in champion["files"]])
    np.testing.assert_array_equal(inputs, batch["image"].numpy())  # raw files preprocessed as training's arrays
    with torch.no_grad():
        logits = champion["model"](batch["image"])
    expected_masks = (logits["lesion"][:, 0] > 0).numpy()
    assert 0 < expected_masks.mean() < 1  # not a trivial mask
    predictions = predictor.predict(inputs)
    np.testing.assert_array_equal(np.stack([p.masks["lesion"] for p in predictions]), expected_masks)
    probabilities = torch.softmax(logits["diagnosis"], dim=1)
    for prediction, row in zip(predictions, probabilities):
        name, probability = prediction.classes["diagnosis"]
        assert name == test.classes[int(row.argmax())]
        assert probability == pytest.approx(float(row.max()), abs=1e-6)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, tiny_data):
    """Two models with spread outputs as folds 0 and 1 of ``equal``, promoted with the default package (their
    fold ensemble) to champion of ``tiny-ensemble``; the raw files of the test split, in test order."""
    tmp = tmp_path_factory.mktemp("predict_ensemble")
    test = load_test(tiny_data)
    images = to_tensors(test.read(np.arange(len(test))), torch.device("cpu"))["image"]
    with isolated_mlflow():
        params = registry_params(tmp, train={"folds": [0, 1]}, registry={"model_name": MODEL_ENSEMBLE})
        members = [spread_model(params, seed, images) for seed in (3, 4)]
        write_checkpoints(tmp / "work", dict(enumerate(members)))
        assert promote(params, tmp / "work", tiny_data)["candidate"]["package"] == "ensemble"
        by_id = {r.id: r.image for r in read_manifest(tiny_data / "ingested").records}
        yield {
            "params": params,
            "members": members,
            "images": images,
            "files": [tiny_data / "ingested" / by_id[i] for i in test.ids],
        }


def test_ensemble_champion_predicts_the_mean_of_its_fold_checkpoints_evaluated_directly(ensemble, tiny_data, tmp_path):
    mean = mean_probabilities(ensemble["members"], ensemble["images"])  # (B, S, S) lesion, (B, K) diagnosis
    assert np.abs(mean["lesion"] - 0.5).min() > 1e-5 and np.abs(mean["diagnosis"] - 0.5).min() > 1e-3  # no ties
    expected_masks = mean["lesion"] > 0.5
    assert 0 < expected_masks.mean() < 1  # not a trivial mask
    predictor = load_predictor(f"models:/{MODEL_ENSEMBLE}@champion")
    inputs = np.stack([predictor.read(path).image for path in ensemble["files"]])
    frame = predictor.model.predict(inputs)
    np.testing.assert_allclose(np.stack(frame["lesion"]), mean["lesion"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.stack(frame["diagnosis"]), mean["diagnosis"], rtol=0, atol=1e-6)
    predictions = predictor.predict(inputs)
    np.testing.assert_array_equal(np.stack([p.masks["lesion"] for p in predictions]), expected_masks)
    names = [load_test(tiny_data).classes[i] for i in mean["diagnosis"].argmax(axis=1)]
    assert [p.classes["diagnosis"][0] for p in predictions] == names
    np.testing.assert_allclose(
        [p.classes["diagnosis"][1] for p in predictions], mean["diagnosis"].max(axis=1), rtol=0, atol=1e-6
    )
    records = predict.run(ensemble["params"], ensemble["files"], tmp_path / "out")  # the champion, as users call it
    assert [r["diagnosis_class"] for r in records] == names
    np.testing.assert_allclose(
        [r["diagnosis_probability"] for r in records], mean["diagnosis"].max(axis=1), rtol=0, atol=1e-5
    )  # one image at a time: float32 convolutions round differently


@pytest.mark.slow  # a fresh interpreter imports MLflow and torch: about 20 s on 2 busy cores
def test_mlflow_serves_the_champion_in_a_process_without_this_checkout(champion, tmp_path):
    code = (
        "import json, mlflow, numpy as np, sys\n"
        f"model = mlflow.pyfunc.load_model({CHAMPION!r})\n"
        "frame = model.predict(np.zeros((3, 1, 32, 32), np.float32))\n"
        "print(json.dumps({'rows': len(frame), 'mask': list(frame['lesion'][0].shape),\n"
        "                  'probabilities': list(frame['diagnosis'][0].shape), 'class': frame['diagnosis_class'][0],\n"
        "                  'package': sys.modules['pipeline'].__file__}))\n"
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": champion["params"].tracking.uri,
        "PYTHONPATH": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert (out["rows"], out["mask"], out["probabilities"]) == (3, [32, 32], [2])
    assert out["class"] in ("benign", "malignant")
    assert out["package"].endswith("/code/pipeline/__init__.py")  # the copy logged with the model


def _run_cli(champion, inputs, out) -> int:
    return main(["--params", str(champion["params_file"]), "predict", *map(str, inputs), "--out", str(out)])


def test_predict_writes_masks_at_the_original_size_with_areas_and_classes(champion, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    grey = [shutil.copy(path, folder / f"scan{i}.png") for i, path in enumerate(champion["files"][:2])]
    rgb = folder / "scan_rgb.png"
    Image.open(grey[0]).convert("RGB").save(rgb)  # RGB-encoded grey is read as grey
    assert _run_cli(champion, [folder], tmp_path / "out") == 0
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert document["model_uri"] == CHAMPION
    records = {r["file"]: r for r in document["images"]}
    assert set(records) == {str(p) for p in (*grey, rgb)}
    expected = champion["predictor"].predict_files([grey[0], grey[1]])
    for path, prediction in zip(grey, expected):
        record = records[str(path)]
        mask = np.asarray(Image.open(tmp_path / "out" / record["lesion_mask"]))
        height, width = np.asarray(Image.open(path)).shape
        assert mask.shape == (height, width) == (record["height"], record["width"]) != (32, 32)
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, prediction.masks["lesion"] == 1)
        assert record["lesion_area_px"] == int((mask == 255).sum())
        assert record["lesion_area_fraction"] == pytest.approx(record["lesion_area_px"] / (height * width))
        name, probability = prediction.classes["diagnosis"]
        assert (record["diagnosis_class"], record["diagnosis_probability"]) == (name, pytest.approx(probability))
    same = {k: v for k, v in records[str(rgb)].items() if k not in ("file", "lesion_mask")}
    assert same == {k: v for k, v in records[str(grey[0])].items() if k not in ("file", "lesion_mask")}
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == [r["file"] for r in document["images"]]
    assert rows[0]["lesion_area_px"] == str(document["images"][0]["lesion_area_px"])


def test_bad_files_are_reported_and_the_rest_still_predicted(champion, tmp_path, capsys):
    good = [shutil.copy(path, tmp_path / f"good{i}.png") for i, path in enumerate(champion["files"][:2])]
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    transparent = tmp_path / "transparent.png"
    rgba = Image.open(good[0]).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(transparent)
    jpeg = tmp_path / "scan.jpg"
    Image.open(good[0]).save(jpeg)
    inputs = [good[0], garbage, transparent, jpeg, tmp_path / "missing.png", good[1]]

    assert _run_cli(champion, inputs, tmp_path / "out") == 2
    err = capsys.readouterr().err
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"]
    assert [r["file"] for r in records] == [str(p) for p in inputs]
    status = {r["file"]: (r["status"], r["error"]) for r in records}
    assert status[str(good[0])] == status[str(good[1])] == ("ok", None)
    for path, reason in (
        (garbage, "unreadable or corrupt image"),
        (transparent, "transparent pixels"),
        (jpeg, "expected a PNG image, got JPEG"),
        (tmp_path / "missing.png", "no such file"),
    ):
        state, error = status[str(path)]
        assert state == "error" and error.startswith(str(path)) and reason in error, error
        assert f"error: {error}" in err
    assert "4 of 6 images could not be predicted" in err.splitlines()[-1]
    for record in records[:1] + records[-1:]:
        assert (tmp_path / "out" / record["lesion_mask"]).is_file()
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["status"], r["lesion_area_px"] == "") for r in rows] == [
        ("ok", False),
        *[("error", True)] * 4,
        ("ok", False),
    ]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/nope@champion", rf"no registered model 'nope' in sqlite:///.* \(registered: \['{MODEL_NAME}'\]\)"),
        (
            f"models:/{MODEL_NAME}@gold",
            rf"'{MODEL_NAME}' has no alias 'gold' \(aliases: \['challenger', 'champion'\]\)",
        ),
        (f"models:/{MODEL_NAME}/9", "cannot load it"),
    ],
)
def test_missing_model_fails_before_any_image_is_read(champion, tmp_path, capsys, uri, message):
    with pytest.raises(PipelineError, match=message):
        predict.run(champion["params"], champion["files"][:1], tmp_path / "out", model_uri=uri)
    assert not (tmp_path / "out").exists()
    args = [
        "--params",
        str(champion["params_file"]),
        "predict",
        str(champion["files"][0]),
        "--model-uri",
        uri,
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model ") and err.count("\n") == 1
