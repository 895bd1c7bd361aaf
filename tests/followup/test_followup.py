"""``track``: one wound's area and tissue composition over its visits, from given masks or a registered
model, with the same numbers from a folder or a CSV, and bad series refused naming the file or CSV line."""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.cli import main
from pipeline.data.wound_synthetic import generate_series
from pipeline.errors import DataError
from pipeline.followup import track as command
from pipeline.followup.series import date_in_name, read_series
from pipeline.registry.inputs import read_input
from pipeline.registry.predictor import load_predictor
from pipeline.registry.store import log_model
from pipeline.tasks import build_tasks
from pipeline.tracking import connect
from pipeline.train.checkpoint import save_checkpoint
from tests.conftest import isolated_mlflow
from tests.registry.conftest import registry_params, seeded_model

DAYS = [datetime.date(2026, 3, 1) + datetime.timedelta(days=d) for d in (0, 14, 35, 63)]
SPACING_MM = 0.5
WOUND_MODEL, BREAST_MODEL, WOUND_ENSEMBLE = "tiny-wound", "tiny-breast", "tiny-wound-ensemble"


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict:
    """A four-visit synthetic series of one healing wound (64 px photos + index masks) and the wound
    params it was drawn with, as a params file."""
    tmp = tmp_path_factory.mktemp("track")
    params = registry_params(tmp, workload="wound", registry={"model_name": WOUND_MODEL, "floors": {"wound.dice": 0.0}})
    pairs = generate_series(tmp / "series", DAYS, 64, seed=3, tissue_colours=[t.colour for t in params.data.tissues])
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return {"tmp": tmp, "params": params, "params_file": params_file, "folder": tmp / "series", "pairs": pairs}


def _track(series, source: Path, out: Path, *options: str) -> int:
    return main(["--params", str(series["params_file"]), "track", str(source), *options, "--out", str(out)])


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_masks_give_their_pixel_counts_and_consistent_changes(series, tmp_path):
    masks = series["folder"] / "masks"
    assert _track(series, series["folder"], tmp_path, "--masks", str(masks), "--pixel-spacing-mm", str(SPACING_MM)) == 0
    rows = _csv(tmp_path / "track.csv")
    document = json.loads((tmp_path / "track.json").read_text())
    names = [t.name for t in series["params"].data.tissues]
    assert (document["masks"], document["model_uri"], document["tissues"]) == (str(masks), None, names)
    assert document["pixel_spacing_mm"] == SPACING_MM
    assert [r["date"] for r in rows] == [d.isoformat() for d in DAYS]
    for row, visit, (image, mask_path) in zip(rows, document["visits"], series["pairs"], strict=True):
        mask = np.asarray(Image.open(mask_path))
        area = int((mask > 0).sum())
        assert row["path"] == str(image)
        assert int(row["wound_area_px"]) == visit["wound_area_px"] == area > 0
        assert float(row["wound_area_cm2"]) == pytest.approx(area * (SPACING_MM / 10) ** 2)
        for k, name in enumerate(names, start=1):
            assert float(row[f"fraction_{name}"]) == visit[f"fraction_{name}"] == int((mask == k).sum()) / area
    visits = document["visits"]
    assert visits[0]["days_since_previous"] is None and visits[0]["area_change_px"] is None
    for before, now in itertools.pairwise(visits):
        assert (
            now["days_since_previous"]
            == (datetime.date.fromisoformat(now["date"]) - datetime.date.fromisoformat(before["date"])).days
        )
        assert now["area_change_px"] == now["wound_area_px"] - before["wound_area_px"] < 0  # the wound heals
        assert now["area_change_relative"] == pytest.approx(now["area_change_px"] / before["wound_area_px"])
        for name in names:
            change = now[f"fraction_{name}"] - before[f"fraction_{name}"]
            assert now[f"fraction_change_{name}"] == pytest.approx(change)
    with Image.open(tmp_path / "track.png") as figure:
        assert figure.format == "PNG" and figure.width > 300

    doubled = command.run(
        series["params"], series["folder"], tmp_path / "doubled", masks=masks, pixel_spacing_mm=2 * SPACING_MM
    )
    unknown = command.run(series["params"], series["folder"], tmp_path / "none", masks=masks)
    for row, twice, plain in zip(visits, doubled, unknown, strict=True):
        assert twice["wound_area_cm2"] == pytest.approx(4 * row["wound_area_cm2"])  # area scales with spacing²
        assert plain["wound_area_cm2"] is None and plain["wound_area_px"] == row["wound_area_px"]
    assert all(r["wound_area_cm2"] == "" for r in _csv(tmp_path / "none" / "track.csv"))


def test_csv_series_gives_the_folders_measurements_in_date_order(series, tmp_path):
    folder = series["folder"]
    images = [image for image, _ in series["pairs"]]
    shutil.copytree(folder, tmp_path / folder.name)
    (tmp_path / "csv").mkdir()
    listed = tmp_path / "csv" / "visits.csv"  # latest visit first; one absolute path, the others relative to csv/
    paths = [images[i] if i == 2 else Path("..") / folder.name / images[i].name for i in range(len(images))]
    listed.write_text("path,date\n" + "".join(f"{paths[i]},{DAYS[i]}\n" for i in reversed(range(len(images)))))
    from_csv = command.run(series["params"], listed, tmp_path / "a", masks=folder / "masks")
    from_folder = command.run(series["params"], folder, tmp_path / "b", masks=folder / "masks")
    assert [r["date"] for r in from_csv] == [d.isoformat() for d in DAYS]
    assert [{k: v for k, v in r.items() if k != "path"} for r in from_csv] == [
        {k: v for k, v in r.items() if k != "path"} for r in from_folder
    ]
    assert [Path(r["path"]).name for r in from_csv] == [p.name for p in images]


@pytest.mark.parametrize(
    ("name", "day"),
    [
        ("wound_2026-03-01.png", (2026, 3, 1)),
        ("visit-20260301.png", (2026, 3, 1)),
        ("2026_12_31 left heel.png", (2026, 12, 31)),
        ("p7_20250229x.png", None),
        ("wound_2026-13-40.png", None),
        ("wound.png", None),
        ("id12345678901.png", None),
        ("from_2026-03-01_to_2026-03-08.png", None),
    ],
)
def test_dates_in_file_names(name, day):
    if day is not None:
        assert date_in_name(Path(name)) == datetime.date(*day)
        return
    with pytest.raises(DataError, match=rf"^{name}: .*YYYY-MM-DD, YYYY_MM_DD or YYYYMMDD"):
        date_in_name(Path(name))


def _files(folder: Path, *names: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("files", "listing", "message"),
    [
        (
            ["wound_2026-03-01.png", "wound_2026-13-40.png"],
            None,
            r"wound_2026-13-40\.png: '2026-13-40' .* not a valid date",
        ),
        (["wound_2026-03-01.png", "photo.png"], None, r"photo\.png: no date in the file name"),
        (["a_2026-03-01.png", "b_20260301.png"], None, r"b_20260301\.png: same date 2026-03-01 as .*a_2026-03-01\.png"),
        (
            ["a.png", "b.png"],
            "path,date\na.png,2026-03-01\nb.png,01/03/2026\n",
            r"visits\.csv line 3: date '01/03/2026' is not a valid ISO date; expected YYYY-MM-DD",
        ),
        (
            ["a.png", "b.png"],
            "path,date\na.png,2026-03-01\nb.png,2026-03-01\n",
            r"visits\.csv line 3: same date 2026-03-01 as .*visits\.csv line 2",
        ),
        (
            ["a.png"],
            "path,date\na.png,2026-03-01\ngone.png,2026-03-08\n",
            r"visits\.csv line 3: .*gone\.png: no such file",
        ),
        (["a.png"], "file,day\na.png,2026-03-01\n", r"visits\.csv: header \['file', 'day'\] lacks \['path', 'date'\]"),
        ([], None, r"series: no images"),
        ([], "path,date\n", r"visits\.csv: no images"),
    ],
)
def test_bad_series_are_refused_naming_the_file_or_line(tmp_path, files, listing, message):
    source = _files(tmp_path / "series", *files)
    if listing is not None:
        source = source / "visits.csv"
        source.write_text(listing)
    with pytest.raises(DataError, match=message):
        read_series(source)


def test_cli_reports_a_bad_series_on_one_line_and_writes_nothing(series, tmp_path, capsys):
    source = _files(tmp_path / "series", "wound_2026-03-01.png", "wound_2026-02-30.png")
    assert _track(series, source, tmp_path / "out", "--masks", str(source)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "wound_2026-02-30.png" in err
    assert not (tmp_path / "out").exists()


_DAMAGE = {
    "missing": lambda path: path.unlink(),
    "value": lambda path: Image.fromarray(np.full((64, 64), 9, np.uint8)).save(path),
    "size": lambda path: Image.fromarray(np.ones((32, 32), np.uint8)).save(path),
}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"masks/wound_2026-03-15\.png: no such file; expected the index mask of .*series/wound_2026-03-15"),
        ("value", r"masks/wound_2026-03-15\.png: .*\[9\]"),
        ("size", r"masks/wound_2026-03-15\.png: \(32, 32\) px \(H, W\), but its photo .* is \(64, 64\)"),
    ],
)
def test_bad_masks_are_refused_naming_the_mask(series, tmp_path, damage, message):
    masks = shutil.copytree(series["folder"] / "masks", tmp_path / "masks")
    _DAMAGE[damage](masks / "wound_2026-03-15.png")
    with pytest.raises(DataError, match=message):
        command.run(series["params"], series["folder"], tmp_path / "out", masks=masks)
    assert not (tmp_path / "out").exists()


def _register(params, tmp: Path, *models) -> None:
    """Log ``models`` (networks of ``params``; several: their fold ensemble) as a pyfunc model and make it the
    champion of ``registry.model_name``, in the sqlite store of ``params``."""
    checkpoints = [tmp / f"{params.registry.model_name}_{i}.pt" for i in range(len(models))]
    for checkpoint, model in zip(checkpoints, models):
        save_checkpoint(checkpoint, {"model": model.state_dict(), "epoch": 0})
    connect(params)
    example = np.zeros((1, params.data.channels, params.data.image_size, params.data.image_size), np.float32)
    with mlflow.start_run():
        info = log_model(params, checkpoints, example)
    version = mlflow.register_model(info.model_uri, params.registry.model_name)
    MlflowClient().set_registered_model_alias(params.registry.model_name, "champion", version.version)


@pytest.fixture(scope="module")
def champions(series):
    """Registered champions in the series' sqlite store, untrained: a wound model (tasks wound + tissue),
    a breast model (lesion + diagnosis, no tissue map), with grey copies of the series for it, and the fold
    ensemble of two wound models (``members``). The breast model's lesion output layer is scaled up from
    logits of about 1e-3 and centred on the copies' median logit, so that its masks are neither empty nor
    full; the ensemble members' output layers are scaled up so that their probabilities differ."""
    tmp = series["tmp"]
    grey = tmp / "grey"
    grey.mkdir()
    for image, _ in series["pairs"]:
        Image.open(image).convert("L").save(grey / image.name)  # the breast model reads grey scans
    breast = registry_params(tmp, registry={"model_name": BREAST_MODEL})
    lesion = seeded_model(breast, seed=2)
    files = sorted(grey.iterdir())
    inputs = torch.from_numpy(np.stack([read_input(p, breast.data.image_size, 1).image for p in files]))
    weight, bias = lesion.task_parameters("lesion")[-2:]  # the output layer
    with torch.no_grad():
        weight.mul_(1000)
        bias.mul_(1000)
        bias.sub_(lesion(inputs)["lesion"].median())
    ensemble = registry_params(tmp, workload="wound", registry={"model_name": WOUND_ENSEMBLE, "floors": {}})
    members = [seeded_model(ensemble, seed) for seed in (4, 5)]
    with torch.no_grad():
        for member in members:
            for task in build_tasks(ensemble):
                member.task_parameters(task.name)[-2].mul_(100)
    with isolated_mlflow():
        _register(series["params"], tmp, seeded_model(series["params"], seed=1))
        _register(breast, tmp, lesion)
        _register(ensemble, tmp, *members)
        yield {"grey": grey, "members": members}


def test_model_areas_and_fractions_are_those_of_its_predicted_masks(series, champions, tmp_path):
    assert _track(series, series["folder"], tmp_path) == 0  # default: the champion of registry.model_name
    document = json.loads((tmp_path / "track.json").read_text())
    assert (document["model_uri"], document["masks"]) == (f"models:/{WOUND_MODEL}@champion", None)
    wound, tissue = build_tasks(series["params"])
    names = list(tissue.class_names[1:])
    assert document["tissues"] == names
    images = [image for image, _ in series["pairs"]]
    predictions = load_predictor(document["model_uri"]).predict_files(images)
    for visit, prediction in zip(document["visits"], predictions, strict=True):
        region, tissues = prediction.masks[wound.name], prediction.masks[tissue.name]
        assert region.shape == tissues.shape == (64, 64)
        assert visit["wound_area_px"] == int(region.sum())
        assert 0 < visit["wound_area_px"] < region.size
        inside = int((tissues > 0).sum())
        assert 0 < inside < tissues.size  # an untrained net, but not a trivial map
        for k, name in enumerate(names, start=1):
            assert visit[f"fraction_{name}"] == int((tissues == k).sum()) / inside
    assert (tmp_path / "track.png").is_file()


def test_an_ensemble_champion_is_tracked_by_its_members_mean_probabilities(series, champions, tmp_path):
    uri = f"models:/{WOUND_ENSEMBLE}@champion"
    rows = command.run(series["params"], series["folder"], tmp_path, model_uri=uri)
    images = [image for image, _ in series["pairs"]]
    predictor = load_predictor(uri)
    inputs = np.stack([predictor.read(path).image for path in images])
    frame = predictor.model.predict(inputs)
    with torch.no_grad():
        outputs = [member.eval()(torch.from_numpy(inputs)) for member in champions["members"]]
    wound, tissue = build_tasks(series["params"])
    for task, probability in ((wound, lambda x: torch.sigmoid(x[:, 0])), (tissue, lambda x: torch.softmax(x, dim=1))):
        each = [probability(out[task.name]).numpy() for out in outputs]
        assert np.abs(each[0] - each[1]).max() > 0.05  # members that disagree
        np.testing.assert_allclose(np.stack(frame[task.name]), np.mean(each, axis=0), rtol=0, atol=1e-6)
    names = list(tissue.class_names[1:])
    for row, prediction in zip(rows, predictor.predict_files(images), strict=True):
        region, tissues = prediction.masks[wound.name], prediction.masks[tissue.name]
        assert row["wound_area_px"] == int(region.sum())
        inside = int((tissues > 0).sum())
        assert 0 < row["wound_area_px"] < region.size and 0 < inside
        for k, name in enumerate(names, start=1):
            assert row[f"fraction_{name}"] == int((tissues == k).sum()) / inside


def test_a_model_without_a_tissue_map_reports_areas_only(series, champions, tmp_path):
    grey = champions["grey"]
    uri = f"models:/{BREAST_MODEL}@champion"
    rows = command.run(series["params"], grey, tmp_path / "out", model_uri=uri, pixel_spacing_mm=SPACING_MM)
    predictions = load_predictor(uri).predict_files(sorted(grey.iterdir()))
    assert [r["wound_area_px"] for r in rows] == [int(p.masks["lesion"].sum()) for p in predictions]
    assert all(0 < r["wound_area_px"] < 64 * 64 for r in rows)
    assert not any(key.startswith("fraction") for key in rows[0])
    document = json.loads((tmp_path / "out" / "track.json").read_text())
    assert document["tissues"] == [] and document["model_uri"] == uri
    assert (tmp_path / "out" / "track.png").is_file()
