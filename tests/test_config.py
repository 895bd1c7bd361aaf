"""params.yaml is validated before any stage works, and every mistake is reported with its key, value and what is
allowed: the schema when the file is read, the names and settings of plug-ins (balancers, networks) by the
plug-ins themselves before anything trains."""

import pytest

from pipeline.balancers import check_methods
from pipeline.config import Params, load_params, parse_params
from pipeline.environment import tracking_uri
from pipeline.errors import ConfigError


def test_repository_params_file_is_valid():
    params = load_params()
    assert isinstance(params, Params)
    assert params.data.image_size % 32 == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"data": {"image_sise": 64}}, "data.image_sise = 64: unknown key"),
        ({"data": {"image_size": 100}}, "data.image_size = 100: must be a multiple of 32"),
        ({"split": {"k_folds": 1}}, "split.k_folds = 1: Input should be greater than or equal to 2"),
        ({"train": {"epochs": "many"}}, "train.epochs = 'many'"),
        ({"train": {"balancers": ["equal", "pcgrad"]}}, "train.balancers: unknown balancers ['pcgrad']; expected"),
        (
            {"train": {"balancers": ["equal", "equal"]}},
            "train.balancers = ['equal', 'equal']: must list at least one balancer, each once",
        ),
        ({"balancer": {"pcgrad": {}}}, "balancer: unknown balancers ['pcgrad']; expected names of ['atdwa', 'dwa'"),
        ({"balancer": {"dwa": {"temprature": 1.0}}}, "balancer.dwa.temprature = 1.0: unknown key"),
        ({"balancer": {"atdwa": {"gamma": -0.1}}}, "balancer.atdwa.gamma = -0.1"),
        ({"balancer": {"atdwa": {"t0": 0}}}, "balancer.atdwa.t0 = 0: Input should be greater than 0"),
        ({"balancer": {"atdwa": {"window": 1}}}, "balancer.atdwa.window = 1"),
        ({"model": {"name": "vgg"}}, "model.name = 'vgg': expected one of ['attention_unet', 'ssc_resnet34'"),
        ({"model": {"name": "unet", "pretrained_encoder": "w.pt"}}, "model.pretrained_encoder: unet loads no"),
        ({"tasks": [{"name": "lesion", "kind": "regression", "target": "mask"}]}, "tasks.0.kind = 'regression'"),
        (
            {"tasks": [{"name": "d", "kind": "classification", "target": "mask"}]},
            "kind 'classification' needs target 'label'",
        ),
        ({"train": {"folds": [0, 3]}, "split": {"k_folds": 2}}, "train.folds: [3] outside 0..1"),
        ({"registry": {"primary": ["seg.dice"]}}, "registry.primary: ['seg.dice'] name tasks that are not configured"),
        ({"registry": {"floors": {"lesion": 0.5}}}, "registry.floors: ['lesion'] are not <task>.<metric> names"),
        ({"registry": {"floors": {"lesion.dice": 1.5}}}, "registry.floors.lesion.dice = 1.5"),
        ({"registry": {"min_improvement": -0.1}}, "registry.min_improvement = -0.1"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(raw, expected):
    with pytest.raises(ConfigError) as err:
        check_methods(parse_params(raw, "params.yaml"))
    assert str(err.value).startswith("params.yaml: ")
    assert expected in str(err.value)


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_classes_are_kept_in_canonical_order():
    assert parse_params({"data": {"classes": ["malignant", "normal", "benign"]}}).data.classes == (
        "normal",
        "benign",
        "malignant",
    )


def test_relative_sqlite_tracking_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(parse_params({})) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_uri(parse_params({"tracking": {"uri": "http://127.0.0.1:5000"}})) == "http://127.0.0.1:5000"
