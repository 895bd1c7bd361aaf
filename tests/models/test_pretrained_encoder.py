"""Loading a torchvision-format ResNet-34 state_dict into the SSC-ResNet encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import parse_params
from pipeline.errors import ConfigError, DataError
from pipeline.models import SSCResNet34, build_model
from pipeline.tasks import Task, build_tasks


def torchvision_state_dict() -> dict[str, torch.Tensor]:
    """Random tensors under torchvision's ResNet-34 names (3-channel conv1, 1000-class fc)."""
    reference = SSCResNet34([Task("diagnosis", "classification", "label", 2)], in_channels=3)
    g = torch.Generator().manual_seed(0)
    state = {
        key: torch.randint(0, 5, value.shape, generator=g)
        if key.endswith("num_batches_tracked")
        else torch.randn(value.shape, generator=g)
        for key, value in reference.encoder.state_dict().items()
    }
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def build_with(path: Path, channels: int):
    p = parse_params({"data": {"channels": channels}, "model": {"pretrained_encoder": str(path)}})
    return build_model(p, build_tasks(p))


@pytest.mark.parametrize("channels", [1, 3])
def test_pretrained_weights_replace_the_encoder_weights(tmp_path, channels):
    state = torchvision_state_dict()
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)
    model = build_with(path, channels)
    loaded = model.encoder.state_dict()
    for key, value in loaded.items():
        if key == "conv1.weight" and channels == 1:
            torch.testing.assert_close(value, state[key].sum(dim=1, keepdim=True))
        else:
            torch.testing.assert_close(value, state[key])


def test_missing_keys_name_the_file_and_the_keys(tmp_path):
    state = torchvision_state_dict()
    del state["layer3.5.conv2.weight"]
    path = tmp_path / "truncated.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"truncated\.pth.*missing keys \['layer3\.5\.conv2\.weight'\]"):
        build_with(path, 1)


def test_resnet18_file_is_rejected(tmp_path):
    state = {k: v for k, v in torchvision_state_dict().items() if not k.startswith(("layer3.5", "layer4.2"))}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"resnet18\.pth.*missing keys"):
        build_with(path, 1)


def test_shape_mismatch_names_the_file_and_the_key(tmp_path):
    state = torchvision_state_dict()
    state["layer4.0.conv1.weight"] = torch.randn(512, 128, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"wrong\.pth: layer4\.0\.conv1\.weight has shape \(512, 128, 3, 3\)"):
        build_with(path, 1)


def test_not_a_state_dict_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(DataError, match=r"notes\.pth: not a torch state_dict file"):
        build_with(path, 1)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.pretrained_encoder.*absent\.pth.*file not found"):
        build_with(tmp_path / "absent.pth", 1)
