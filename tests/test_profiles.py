"""The paper protocol is one command away and is validated before params.yaml is touched."""

import shutil
from pathlib import Path

import pytest

from pipeline.balancers.atdwa import ATDWASettings
from pipeline.config import load_params
from pipeline.errors import ConfigError
from pipeline.profiles import apply

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A copy of the repository's params.yaml and profiles/, as the working directory."""
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_paper_profile_sets_the_paper_protocol(project):
    apply("paper", Path("params.yaml"))
    p = load_params(Path("params.yaml"))
    assert (p.data.image_size, p.split.k_folds, p.train.lr, p.train.batch_size) == (256, 5, 1e-4, 16)
    atdwa = ATDWASettings.of(p, "atdwa")
    assert (atdwa.t0, atdwa.gamma, atdwa.window) == (2.0, 0.8, 3)
    assert p.train.early_stopping_patience == 15 and p.augment.copies_per_image == 6


def test_wound_profile_switches_the_breast_params_to_the_wound_workload(project):
    apply("wound", Path("params.yaml"))
    p = load_params(Path("params.yaml"))
    assert (p.workload, p.data.layout, p.data.channels, p.model.name) == ("wound", "dfutissue", 3, "attention_unet")
    assert [t.name for t in p.tasks] == ["wound", "tissue"]
    assert dict(p.registry.floors) == {"wound.dice": 0.5, "tissue.dice": 0.3}  # the breast floors are gone
    assert p.train.balancers == ("equal", "uncertainty", "gradnorm", "dwa", "atdwa", "stl", "mtcool")


def test_unknown_profile_lists_known_ones_and_leaves_params_alone(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"known profiles: \['busi', 'dfutissue', 'fuseg', 'paper', 'wound'\]"):
        apply("papr", Path("params.yaml"))
    assert (tmp_path / "params.yaml").read_text() == "seed: 1\n"


@pytest.mark.parametrize("profile", ["busi", "dfutissue", "fuseg"])
def test_a_real_data_profile_needs_the_dataset_and_leaves_params_untouched_without_it(project, profile):
    before = Path("params.yaml").read_text()
    with pytest.raises(ConfigError, match=rf"profile '{profile}' reads a real dataset: .*DATA="):
        apply(profile, Path("params.yaml"))
    assert Path("params.yaml").read_text() == before


def test_one_command_points_a_real_data_profile_at_its_dataset(project):
    apply("busi", Path("params.yaml"), data="/datasets/Dataset_BUSI_with_GT")
    p = load_params(Path("params.yaml"))
    assert (p.data.source, p.data.layout, p.data.classes) == (
        "/datasets/Dataset_BUSI_with_GT",
        "busi",
        ("benign", "malignant"),
    )


def test_wound_dataset_profiles_set_every_key_their_tasks_need(project):
    apply("fuseg", Path("params.yaml"), data="/datasets/fuseg")
    p = load_params(Path("params.yaml"))
    assert [t.name for t in p.tasks] == ["wound"]  # FUSeg has no tissue labels
    assert p.tune.selection.metric == "wound.dice" and p.registry.primary == ("wound.dice",)
    assert dict(p.registry.floors) == {"wound.dice": 0.5}
    apply("dfutissue", Path("params.yaml"), data="/datasets/DFUTissue/Labeled")
    p = load_params(Path("params.yaml"))
    assert [t.name for t in p.data.tissues] == ["slough", "granulation", "callus"]  # DFUTissue has no necrosis
    assert [t.name for t in p.tasks] == ["wound", "tissue"] and p.data.layout == "dfutissue"
