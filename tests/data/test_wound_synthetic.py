"""The synthetic wound photos: reproducible, in the DFUTissue layout, with realistic tissue proportions
and tissues told apart by colour; a series shows one wound shrinking as it heals."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.wound_synthetic import generate_dfutissue, generate_series, render_wound
from pipeline.errors import DataError

COLOURS = ((222, 196, 110), (178, 42, 48), (232, 196, 186), (48, 34, 28))
"""slough, granulation, callus/epithelium, necrosis (RGB)."""
SLOUGH, GRANULATION, CALLUS, NECROSIS = 1, 2, 3, 4
DAYS = [datetime.date(2024, 3, 1) + datetime.timedelta(days=d) for d in (0, 14, 35, 63)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _generate(folder: Path, n_trainval: int = 3, n_test: int = 2, seed: int = 7) -> Path:
    generate_dfutissue(folder, n_trainval, n_test, size=48, seed=seed, tissue_colours=COLOURS)
    return folder


def _photos(n: int, healing: float = 0.0, colours=COLOURS, size: int = 96) -> list[tuple[np.ndarray, np.ndarray]]:
    return [render_wound(np.random.default_rng([11, i]), size, colours, healing) for i in range(n)]


@pytest.fixture(scope="module")
def photos() -> list[tuple[np.ndarray, np.ndarray]]:
    """60 unhealed photos of 96 px with the four default tissues."""
    return _photos(60)


def test_same_seed_gives_byte_identical_files(tmp_path):
    assert _files(_generate(tmp_path / "a")) == _files(_generate(tmp_path / "b"))


def test_different_seed_gives_different_images(tmp_path):
    a, b = _files(_generate(tmp_path / "a", seed=1)), _files(_generate(tmp_path / "b", seed=2))
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a if "/Images/" in name)


def test_adding_images_keeps_the_existing_ones(tmp_path):
    few = _files(_generate(tmp_path / "few", n_trainval=3, n_test=2))
    more = _files(_generate(tmp_path / "more", n_trainval=5, n_test=3))
    for kind in ("Images", "Annotations"):
        folder = f"Labeled/Original/{kind}"
        for n in (1, 2, 3):
            assert few[f"{folder}/TrainVal/{n:04d}.png"] == more[f"{folder}/TrainVal/{n:04d}.png"]
        for old, new in ((4, 6), (5, 7)):  # Test numbers follow TrainVal; the pixels stay the same
            assert few[f"{folder}/Test/{old:04d}.png"] == more[f"{folder}/Test/{new:04d}.png"]


def test_dfutissue_layout_rgb_images_and_grey_index_masks(tmp_path):
    folder = _generate(tmp_path / "set")
    expected = {
        f"Labeled/Original/{kind}/{subset}/{n:04d}.png"
        for kind in ("Images", "Annotations")
        for subset, numbers in (("TrainVal", (1, 2, 3)), ("Test", (4, 5)))
        for n in numbers
    }
    assert set(_files(folder)) == expected
    for name in expected:
        with Image.open(folder / name) as png:
            assert png.size == (48, 48)
            assert png.mode == ("RGB" if "/Images/" in name else "L")
            if "/Annotations/" in name:
                assert set(np.unique(np.asarray(png))) <= set(range(len(COLOURS) + 1))


def test_tissue_proportions_are_realistic(photos):
    masks = np.stack([mask for _, mask in photos])
    counts = np.bincount(masks.ravel(), minlength=5)
    assert counts.size == 5 and (counts[1:] > 0).all()  # every class somewhere, none beyond K
    assert counts[1:].argmax() + 1 == GRANULATION
    wound = (masks > 0).mean(axis=(1, 2))
    assert ((wound > 0.04) & (wound < 0.5)).all()
    slough_share = (masks == SLOUGH).sum(axis=(1, 2)) / (masks > 0).sum(axis=(1, 2))
    assert 0.08 < slough_share.mean() < 0.3
    with_necrosis = (masks == NECROSIS).any(axis=(1, 2)).mean()
    assert 0.15 < with_necrosis < 0.7  # some images, not all
    assert (counts[NECROSIS] < counts[SLOUGH]) and (counts[NECROSIS] < counts[CALLUS])


def test_callus_lies_along_the_wound_edge(photos):
    at_edge, overall = [], []
    for _, mask in photos:
        wound = np.pad(mask > 0, 1)
        core = wound & np.roll(wound, 1, 0) & np.roll(wound, -1, 0) & np.roll(wound, 1, 1) & np.roll(wound, -1, 1)
        at_edge.append(np.pad(mask, 1)[wound & ~core])
        overall.append(mask[mask > 0])
    edge_share = (np.concatenate(at_edge) == CALLUS).mean()
    assert edge_share > 2 * (np.concatenate(overall) == CALLUS).mean()
    assert edge_share > 0.4


def test_tissues_are_told_apart_by_colour(photos):
    means = {}
    for k in range(1, len(COLOURS) + 1):
        pixels = np.concatenate([image[mask == k] for image, mask in photos]).astype(np.float64)
        means[k] = pixels.mean(axis=0)
        assert np.abs(means[k] - COLOURS[k - 1]).max() < 40  # each class looks like its given colour
    for a, mean_a in means.items():
        for b, mean_b in means.items():
            if a < b:
                assert np.linalg.norm(mean_a - mean_b) > 40, (a, b)


def test_skin_tone_varies_between_images(photos):
    skins = np.array([image[mask == 0].mean(axis=0) for image, mask in photos])
    assert skins.std(axis=0).min() > 10


def test_healing_shrinks_the_wound_and_favours_granulation_and_epithelium():
    fresh, healed = (np.stack([m for _, m in _photos(30, h, size=64)]) for h in (0.0, 0.8))
    assert (healed > 0).sum() < 0.6 * (fresh > 0).sum()

    def share(masks, classes):
        return np.isin(masks, classes).sum() / (masks > 0).sum()

    assert share(healed, (GRANULATION, CALLUS)) > share(fresh, (GRANULATION, CALLUS)) + 0.1
    assert share(healed, (SLOUGH, NECROSIS)) < share(fresh, (SLOUGH, NECROSIS))


def test_any_number_of_tissue_classes():
    one = np.stack([m for _, m in _photos(5, colours=COLOURS[:1], size=48)])
    assert set(np.unique(one)) == {0, 1}
    six = COLOURS + ((90, 140, 200), (20, 200, 60))
    masks = np.stack([m for _, m in _photos(20, colours=six, size=48)])
    assert set(np.unique(masks)) == set(range(7))


def _skin_chromaticity(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean skin colour ``(3,)`` divided by its sum: the tone, whatever the exposure."""
    skin = image[mask == 0].mean(axis=0)
    return skin / skin.sum()


def test_series_shows_one_wound_shrinking_over_visits(tmp_path, photos):
    shuffled = [DAYS[2], DAYS[0], DAYS[3], DAYS[1]]
    paths = generate_series(tmp_path / "series", shuffled, size=96, seed=3, tissue_colours=COLOURS)
    assert paths == [
        (tmp_path / "series" / f"wound_{d}.png", tmp_path / "series" / "masks" / f"wound_{d}.png") for d in DAYS
    ]
    images = [np.asarray(Image.open(image)) for image, _ in paths]
    masks = [np.asarray(Image.open(mask)) for _, mask in paths]
    assert all(Image.open(mask).mode == "L" for _, mask in paths)
    areas = [int((m > 0).sum()) for m in masks]
    assert areas == sorted(areas, reverse=True) and len(set(areas)) == len(areas)
    series_tones = np.array([_skin_chromaticity(i, m) for i, m in zip(images, masks, strict=True)])
    other_tones = np.array([_skin_chromaticity(i, m) for i, m in photos])
    assert np.linalg.norm(np.ptp(series_tones, axis=0)) < 0.25 * np.linalg.norm(np.ptp(other_tones, axis=0))
    again = generate_series(tmp_path / "again", DAYS, size=96, seed=3, tissue_colours=COLOURS)
    assert [p.read_bytes() for pair in again for p in pair] == [p.read_bytes() for pair in paths for p in pair]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 16}, "size = 16"),
        ({"tissue_colours": []}, r"tissue_colours = \[\]"),
        ({"tissue_colours": [(10, 20, 300)]}, r"tissue_colours\[0\] = \(10, 20, 300\).*0..255"),
        ({"tissue_colours": [(1, 2, 3), (1, 2)]}, r"tissue_colours\[1\] = \(1, 2\).*3 integers"),
        ({"n_trainval": -1}, "n_trainval = -1"),
        ({"n_test": -2}, "n_test = -2"),
    ],
)
def test_bad_dataset_arguments_raise_data_error_naming_them(tmp_path, kwargs, message):
    args = {"n_trainval": 1, "n_test": 1, "size": 32, "seed": 0, "tissue_colours": COLOURS} | kwargs
    with pytest.raises(DataError, match=message):
        generate_dfutissue(tmp_path, **args)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("healing", [-0.1, 1.5, float("nan")])
def test_healing_outside_0_1_raises_data_error(healing):
    with pytest.raises(DataError, match=r"healing = .*\[0, 1\]"):
        render_wound(np.random.default_rng(0), 64, COLOURS, healing)


@pytest.mark.parametrize(("visits", "message"), [([], r"visits = \[\]"), ([DAYS[0], DAYS[0]], "distinct dates")])
def test_bad_visits_raise_data_error(tmp_path, visits, message):
    with pytest.raises(DataError, match=message):
        generate_series(tmp_path, visits, size=64, seed=0, tissue_colours=COLOURS)
