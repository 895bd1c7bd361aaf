"""One rule for image files, in training and in ``predict``: ingest and ``predict`` refuse the same file with
the same error (an image with transparent pixels), and read the same model input from an opaque image with an
alpha channel or from a colour image (a few of real BUSI's ultrasound images have colour overlays). Masks are
not images: their alpha channel is ignored, as real BUSI has RGBA masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import Params, parse_params
from pipeline.data import ingest, preprocess
from pipeline.data.images import read_mask
from pipeline.data.manifest import read_manifest
from pipeline.errors import DataError
from pipeline.registry.inputs import read_input
from pipeline.runtime.device import to_tensors

pytestmark = pytest.mark.usefixtures("scratch")

SIZE = 32
IMAGE_ID = "benign_0001"


def _params(source: Path, channels: int = 1) -> Params:
    return parse_params({"data": {"source": str(source), "image_size": SIZE, "channels": channels}}, "test")


def _image(source: Path) -> Path:
    return source / "Dataset_BUSI_with_GT" / "benign" / "benign (1).png"


def _save_with_alpha(path: Path, transparent_pixels: int = 0) -> None:
    """Re-save the grey PNG ``path`` as RGBA, opaque but for its first ``transparent_pixels`` pixels."""
    rgba = np.asarray(Image.open(path).convert("RGBA")).copy()
    rgba.reshape(-1, 4)[:transparent_pixels, 3] = 0
    Image.fromarray(rgba).save(path)


def _save_in_colour(path: Path) -> None:
    """Re-save the grey PNG ``path`` as RGB whose channels differ: its grey level, half of it, its inverse."""
    grey = np.asarray(Image.open(path))
    Image.fromarray(np.dstack([grey, grey // 2, 255 - grey])).save(path)


def test_ingest_and_predict_refuse_an_image_with_transparent_pixels_with_the_same_error(busi, tmp_path):
    source, _ = busi
    image = _image(source)
    _save_with_alpha(image, transparent_pixels=1)

    with pytest.raises(DataError) as refused_by_ingest:
        ingest.run(_params(source), out_dir=tmp_path / "ingested")
    message = str(refused_by_ingest.value)
    assert message.startswith(f"{image}: has transparent pixels (1 of 480, PNG mode RGBA)")
    assert "no faithful grey or colour value" in message
    for channels in (1, 3):
        with pytest.raises(DataError) as refused_by_predict:
            read_input(image, SIZE, channels)
        assert str(refused_by_predict.value) == message


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("save", [_save_with_alpha, _save_in_colour], ids=["opaque RGBA", "colour"])
def test_an_opaque_image_reaches_the_model_as_training_saw_it(busi, tmp_path, save, channels):
    source, expected = busi
    image = _image(source)
    save(image)
    params = _params(source, channels)

    ingest.run(params, out_dir=tmp_path / "ingested")
    preprocess.run(params, ingested=tmp_path / "ingested", out_dir=tmp_path / "preprocessed")

    ids = [r.id for r in read_manifest(tmp_path / "ingested").records]
    trained = np.load(tmp_path / "preprocessed" / "image.npy")[ids.index(IMAGE_ID)]  # (C, S, S) uint8
    served = read_input(image, SIZE, channels)
    batch = {"image": trained[None], "mask": np.zeros((1, SIZE, SIZE), np.uint8)}
    as_trained = to_tensors(batch, torch.device("cpu"))["image"][0].numpy()  # the training loop's scaling
    np.testing.assert_array_equal(served.image, as_trained)
    assert (served.height, served.width) == expected[IMAGE_ID].grey.shape


def test_a_mask_with_transparent_pixels_is_still_read_by_its_colour(busi, tmp_path):
    source, expected = busi
    lesion = expected[IMAGE_ID].mask
    mask = source / "Dataset_BUSI_with_GT" / "benign" / "benign (1)_mask.png"
    Image.fromarray(np.dstack([lesion * np.uint8(255)] * 4)).save(mask)  # RGBA, background transparent black

    ingest.run(_params(source), out_dir=tmp_path / "ingested")

    record = next(r for r in read_manifest(tmp_path / "ingested").records if r.id == IMAGE_ID)
    np.testing.assert_array_equal(read_mask([tmp_path / "ingested" / m for m in record.masks]), lesion)
