"""The paper protocol is one command away and is validated before params.yaml is touched."""

import shutil
from pathlib import Path

import pytest

from pipeline.config import load_params
from pipeline.errors import ConfigError
from pipeline.profiles import apply

ROOT = Path(__file__).resolve().parents[1]


def test_paper_profile_sets_the_paper_protocol(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    apply("paper", Path("params.yaml"))
    p = load_params(Path("params.yaml"))
    assert (p.data.image_size, p.split.k_folds, p.train.lr, p.train.batch_size) == (256, 5, 1e-4, 16)
    assert (p.balancer.atdwa.t0, p.balancer.atdwa.gamma, p.balancer.atdwa.window) == (2.0, 0.8, 3)
    assert p.train.early_stopping_patience == 15 and p.augment.copies_per_image == 6


def test_unknown_profile_lists_known_ones_and_leaves_params_alone(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"known profiles: \['paper'\]"):
        apply("papr", Path("params.yaml"))
    assert (tmp_path / "params.yaml").read_text() == "seed: 1\n"
