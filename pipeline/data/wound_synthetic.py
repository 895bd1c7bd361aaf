"""A deterministic synthetic chronic-wound (diabetic foot ulcer) photo set with tissue index masks.

Every photo is a close-up of skin with one ulcer in it. Each image is drawn from its own
``numpy.random.Generator`` (seeded by ``(seed, subset, index)`` for the DFUTissue layout), so adding
images never changes the existing ones, and the PNG bytes are identical across runs. The functions
take plain arguments; the caller wires them from the params.

What the photos look like:

* skin: a tone interpolated between light and dark anchor colours (different in every image), with
  slow mottling, fine grain, a smooth lighting gradient with vignetting, and reddened periwound
  skin (erythema) of varying strength around the ulcer;
* the ulcer: one region with an irregular but smooth boundary (an ellipse whose radius is modulated
  by harmonics 2-6) at a random position, size (about 5-30 % of the image) and orientation;
* the camera: per-photo exposure and white balance, moist specular glints on the wound bed, a slight
  blur and sensor noise. Tissue boundaries are soft in the image; the mask stays crisp.

What tells the tissues apart (class ``k`` is the ``k``-th colour given, roles by position):

1. slough/fibrin: yellowish, smooth and slightly streaky, in diffuse patches covering about
   10-30 % of the wound;
2. granulation: beefy red with a fine cobblestone grain, the majority of the wound bed;
3. callus/epithelium: pale pink to whitish, smooth, a band of varying width (absent in places)
   along the wound edge;
4. necrosis/eschar: dark brown to black, one small compact patch, present in fewer than half of
   the images;
5. and beyond: one small compact patch each, present in about half of the images.

The colour of each tissue is its given colour with a per-image jitter and per-pixel texture, so
colour tells the classes apart on average but not pixel by pixel. ``healing`` in [0, 1] shrinks the
wound and moves its composition towards granulation and epithelium (less slough, necrosis fading
out), as in a longitudinal series of one wound (:func:`generate_series`).
"""

from __future__ import annotations

import datetime
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.errors import DataError

SLOUGH, GRANULATION, CALLUS, NECROSIS = 1, 2, 3, 4
"""Tissue roles by 1-based class index; classes after the fourth are small extra patches."""
SKIN_TONES = np.array(
    [[243, 208, 184], [226, 175, 142], [196, 139, 104], [146, 96, 66], [98, 64, 44]], dtype=np.float64
)
"""Anchor skin colours (RGB, light to dark); each image's tone lies between two neighbours."""
NECROSIS_CHANCE = 0.45
"""Share of unhealed wounds with a necrotic patch (falls linearly to 0 at ``healing`` = 1)."""
EXTRA_CHANCE = 0.5
"""Share of unhealed wounds with a patch of each extra class (classes 5 and beyond)."""
SERIES_HEALING = 0.8
"""``healing`` at the last visit of a series (it grows linearly with time from 0 at the first)."""
SUBSETS = ("TrainVal", "Test")
"""DFUTissue subsets, in file-numbering order; the position is part of each image's seed."""
_SERIES = 2
"""Seed key of series images (after the subset positions)."""
_GRAIN = {SLOUGH: (0.10, 2.5), GRANULATION: (0.13, 1.3), CALLUS: (0.06, 4.0), NECROSIS: (0.18, 1.8)}
"""Per role: relative brightness variation of the tissue texture and its grain (Gaussian sigma, px
at 128 px); classes beyond the fourth use :data:`_EXTRA_GRAIN`."""
_EXTRA_GRAIN = (0.10, 2.0)


@dataclass(frozen=True)
class _Patch:
    """A compact tissue patch: ``fraction`` of the wound bed nearest ``centre`` (wound-relative
    ``(v, u)`` coordinates, 1 = the mean wound radius), its edge roughened by ``noise``
    ``(size, size)``, present when ``draw`` < chance (which falls with healing)."""

    draw: float
    fraction: float
    centre: tuple[float, float]
    noise: np.ndarray


@dataclass(frozen=True)
class _Wound:
    """What stays the same when one wound is photographed again: skin tone ``(3,)`` RGB, centre
    ``(row, col)`` px, mean radius px, aspect (height / width), angle rad, boundary harmonics
    ``(amplitude, phase)`` arrays, callus band width (wound-relative) and its harmonics, slough
    fraction and field ``(size, size)``, and the compact patches of class 4 and beyond."""

    skin: np.ndarray
    centre: tuple[float, float]
    radius: float
    aspect: float
    angle: float
    outline: tuple[np.ndarray, np.ndarray]
    band: float
    band_outline: tuple[np.ndarray, np.ndarray]
    slough: float
    slough_field: np.ndarray
    patches: tuple[_Patch, ...]


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth Gaussian noise ``(size, size)`` float64 with zero mean and unit standard deviation;
    ``sigma`` px is the correlation length."""
    field = gaussian_filter(rng.standard_normal((size, size)), sigma, truncate=3.0)
    return (field - field.mean()) / (field.std() + 1e-12)


def _harmonics(rng: np.random.Generator, orders: range, amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes (order ``k``: uniform in ``[0, amplitude / k]``) and phases of a radius modulation."""
    ks = np.array(orders, dtype=np.float64)
    return rng.uniform(0, amplitude, ks.size) / ks, rng.uniform(0, 2 * np.pi, ks.size)


def _modulation(theta: np.ndarray, terms: tuple[np.ndarray, np.ndarray], first: int) -> np.ndarray:
    """``sum_k a_k cos(k theta + phi_k)`` over orders ``first..`` for an array of angles rad
    (tabulated at 1024 angles and interpolated)."""
    amps, phases = terms
    ks = np.arange(first, first + amps.size, dtype=np.float64)
    table = np.linspace(-np.pi, np.pi, 1024, endpoint=False)
    values = np.sum(amps * np.cos(table[:, None] * ks + phases), axis=-1)
    return np.interp(theta, table, values, period=2 * np.pi)


def _top(field: np.ndarray, where: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean ``(H, W)``: the ``fraction`` of the ``where`` pixels with the highest ``field``."""
    count = round(fraction * np.count_nonzero(where))
    if count == 0:
        return np.zeros_like(where)
    values = field[where]
    threshold = np.partition(values, values.size - count)[values.size - count]
    return where & (field >= threshold)


def _draw_wound(rng: np.random.Generator, size: int, n_classes: int) -> _Wound:
    """The persistent traits of one wound in a ``size`` px photo with ``n_classes`` tissue classes."""
    tone = rng.uniform(0, len(SKIN_TONES) - 1)
    low = min(int(tone), len(SKIN_TONES) - 2)
    skin = (SKIN_TONES[low] + (tone - low) * (SKIN_TONES[low + 1] - SKIN_TONES[low])) * (1 + rng.normal(0, 0.03, 3))
    radius = rng.uniform(0.14, 0.3) * size
    reach = max(0.0, 0.46 - 1.35 * radius / size)  # keeps (nearly always) all of the wound in the photo
    row, col = (float(c) for c in (0.5 + rng.uniform(-reach, reach, 2)) * size)
    centre = (row, col)
    aspect, angle = rng.uniform(0.55, 1.0), rng.uniform(0, np.pi)
    outline = _harmonics(rng, range(2, 7), 0.35)
    band, band_outline = rng.uniform(0.06, 0.16), _harmonics(rng, range(1, 6), 1.6)
    slough, slough_field = rng.uniform(0.13, 0.36), _noise(rng, size, radius / 4)
    patches: list[_Patch] = []
    for _ in range(max(0, n_classes - 3)):
        where = rng.uniform(0, 0.7) * np.exp(1j * rng.uniform(-np.pi, np.pi))
        patches.append(
            _Patch(
                draw=rng.random(),
                fraction=rng.uniform(0.03, 0.12) if not patches else rng.uniform(0.02, 0.06),
                centre=(where.imag, where.real),
                noise=_noise(rng, size, radius / 6),
            )
        )
    return _Wound(
        skin, centre, radius, aspect, angle, outline, band, band_outline, slough, slough_field, tuple(patches)
    )


def _tissue_map(wound: _Wound, size: int, n_classes: int, healing: float, shift: np.ndarray, turn: float) -> np.ndarray:
    """Crisp tissue index mask ``(size, size)`` uint8 in 0..``n_classes`` of ``wound`` at ``healing``,
    photographed with its centre moved by ``shift`` (row, col) px and turned by ``turn`` rad."""
    scale = wound.radius * (1 - 0.6 * healing)
    axes = (scale * np.sqrt(wound.aspect), scale / np.sqrt(wound.aspect))
    angle = wound.angle + turn
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = rows - wound.centre[0] - shift[0], cols - wound.centre[1] - shift[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / axes[1]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / axes[0]
    theta = np.arctan2(v, u)
    relative = np.hypot(u, v) / (1 + _modulation(theta, wound.outline, 2))
    labels = np.zeros((size, size), dtype=np.uint8)
    inside = relative < 1
    labels[inside] = GRANULATION if n_classes >= GRANULATION else SLOUGH
    bed = inside
    if n_classes >= CALLUS:
        width = (wound.band + 0.15 * healing) * np.clip(1 + _modulation(theta, wound.band_outline, 1), 0, None)
        rim = inside & (relative > 1 - width)
        labels[rim] = CALLUS
        bed = inside & ~rim
    if n_classes >= GRANULATION:
        slough_field = wound.slough_field - 0.4 * relative  # slough gathers towards the centre
        labels[_top(slough_field, bed, wound.slough * (1 - 0.7 * healing))] = SLOUGH
    for k, patch in enumerate(wound.patches, start=NECROSIS):
        chance = NECROSIS_CHANCE if k == NECROSIS else EXTRA_CHANCE
        if patch.draw < chance * (1 - healing):
            near = -np.hypot(v - patch.centre[0], u - patch.centre[1]) + 0.15 * patch.noise
            labels[_top(near, bed, patch.fraction * (1 - 0.5 * healing))] = k
    return labels


def _photograph(
    rng: np.random.Generator, wound: _Wound, size: int, colours: np.ndarray, healing: float
) -> tuple[np.ndarray, np.ndarray]:
    """One photo of ``wound``: RGB ``(size, size, 3)`` uint8 and its tissue mask ``(size, size)`` uint8."""
    px = size / 128  # texture and blur scales are given at 128 px
    shift, turn = rng.normal(0, 0.012 * size, 2), rng.normal(0, 0.05)
    labels = _tissue_map(wound, size, len(colours), healing, shift, turn)

    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
    direction = rng.uniform(-np.pi, np.pi)
    light = (
        rng.uniform(0.85, 1.1)
        * (1 + rng.uniform(0.1, 0.35) * (cols * np.cos(direction) + rows * np.sin(direction)))
        * (1 - rng.uniform(0.1, 0.3) * (rows**2 + cols**2))
    )
    balance = 1 + rng.normal(0, 0.025, 3)

    wound_area = gaussian_filter((labels > 0).astype(np.float64), 0.1 * size)
    redness = rng.uniform(0, 0.8) * np.clip(2 * wound_area, 0, 1)
    skin = wound.skin * (1 + redness[..., None] * np.array([0.04, -0.22, -0.18]))
    skin = skin * (1 + 0.05 * _noise(rng, size, 10 * px) + 0.03 * _noise(rng, size, 0.6 * px))[..., None]

    edge = rng.uniform(0.6, 1.3) * px
    soft = gaussian_filter(np.eye(len(colours) + 1)[labels].transpose(2, 0, 1), (0, edge, edge))
    image = soft[0][..., None] * skin
    mottle = _noise(rng, size, 8 * px)
    for k, colour in enumerate(colours, start=1):
        amount, grain = _GRAIN.get(k, _EXTRA_GRAIN)
        texture = 1 + amount * _noise(rng, size, grain * px) + 0.07 * mottle
        image += soft[k][..., None] * (colour * (1 + rng.normal(0, 0.05, 3)) * texture[..., None])

    image = image * (light[..., None] * balance)
    wet = np.isin(labels, (SLOUGH, GRANULATION, NECROSIS)) & (_noise(rng, size, 0.8 * px) > 2.7)
    glint = np.clip(2 * rng.uniform(0.3, 1.0) * gaussian_filter(wet.astype(np.float64), 0.6 * px), 0, 0.8)
    image += (255 - np.clip(image, 0, 255)) * glint[..., None]
    image = gaussian_filter(image, (0.5 * px, 0.5 * px, 0)) + rng.normal(0, 2.5, image.shape)
    return np.round(np.clip(image, 0, 255)).astype(np.uint8), labels


def _check_size(size: int) -> None:
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 32:
        raise DataError(f"size = {size!r}: expected an integer >= 32 (image side in px)")


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise DataError(f"{name} = {value!r}: expected an integer >= 0")


def _check_colours(tissue_colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """The colours as ``(K, 3)`` float64, or :class:`DataError` naming the first bad one."""
    if (
        not isinstance(tissue_colours, Sequence | np.ndarray)
        or isinstance(tissue_colours, str | bytes)
        or (len(tissue_colours) == 0)
    ):
        raise DataError(f"tissue_colours = {tissue_colours!r}: expected a non-empty list of (R, G, B) colours")
    for i, colour in enumerate(tissue_colours):
        if not (
            isinstance(colour, Sequence | np.ndarray)
            and len(colour) == 3
            and all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)
        ):
            raise DataError(f"tissue_colours[{i}] = {colour!r}: expected 3 integers in 0..255 (R, G, B)")
    return np.array(tissue_colours, dtype=np.float64)


def _check_healing(healing: float) -> None:
    if not isinstance(healing, numbers.Real) or isinstance(healing, bool) or not 0 <= healing <= 1:
        raise DataError(f"healing = {healing!r}: expected a number in [0, 1]")


def render_wound(
    rng: np.random.Generator, size: int, tissue_colours: Sequence[tuple[int, int, int]], healing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """One wound photo drawn from ``rng``: image ``(size, size, 3)`` uint8 RGB and tissue mask
    ``(size, size)`` uint8, 0 = skin, ``k`` = tissue ``tissue_colours[k - 1]`` (roles in the module
    docstring); ``size`` px >= 32, ``healing`` in [0, 1] (0 = untreated, 1 = largely healed)."""
    _check_size(size)
    colours = _check_colours(tissue_colours)
    _check_healing(healing)
    return _photograph(rng, _draw_wound(rng, size, len(colours)), size, colours, float(healing))


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 as an RGB PNG or ``(H, W)`` uint8 as an 8-bit grey (mode "L") PNG,
    with fixed settings and no metadata."""
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)


def generate_dfutissue(
    folder: Path, n_trainval: int, n_test: int, size: int, seed: int, tissue_colours: Sequence[tuple[int, int, int]]
) -> None:
    """Write a synthetic set in the DFUTissue layout under ``folder``:
    ``Labeled/Original/Images/<subset>/NNNN.png`` (RGB) and ``Labeled/Original/Annotations/<subset>/NNNN.png``
    (mode "L" tissue index, 0 = background, ``k`` = ``tissue_colours[k - 1]``) for the subsets TrainVal
    (``n_trainval`` images) then Test (``n_test``), numbered 0001.. across both, ``size`` px each.

    Image ``i`` of a subset is drawn from ``(seed, subset position, i)``, so more images never change
    the existing ones (a Test image keeps its pixels when ``n_trainval`` grows, though its number moves).
    """
    _check_count("n_trainval", n_trainval)
    _check_count("n_test", n_test)
    _check_count("seed", seed)
    _check_size(size)
    colours = _check_colours(tissue_colours)
    root = Path(folder) / "Labeled" / "Original"
    number = 0
    for position, (subset, count) in enumerate(zip(SUBSETS, (n_trainval, n_test), strict=True)):
        images, annotations = root / "Images" / subset, root / "Annotations" / subset
        images.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, position, i])
            image, tissue = _photograph(rng, _draw_wound(rng, size, len(colours)), size, colours, 0.0)
            number += 1
            _write_png(images / f"{number:04d}.png", image)
            _write_png(annotations / f"{number:04d}.png", tissue)


def generate_series(
    folder: Path,
    visits: Sequence[datetime.date],
    size: int,
    seed: int,
    tissue_colours: Sequence[tuple[int, int, int]],
) -> list[tuple[Path, Path]]:
    """Photograph one wound (one skin tone, centre and shape, drawn from ``seed``) at each visit date,
    with ``healing`` growing linearly in time from 0 at the first visit to :data:`SERIES_HEALING` at
    the last, so the wound shrinks. Writes ``folder/wound_<YYYY-MM-DD>.png`` (RGB, ``size`` px) and
    ``folder/masks/wound_<YYYY-MM-DD>.png`` (mode "L" tissue index) and returns the
    ``(image, mask)`` paths in date order."""
    _check_count("seed", seed)
    _check_size(size)
    colours = _check_colours(tissue_colours)
    if isinstance(visits, str) or not isinstance(visits, Sequence) or not visits:
        raise DataError(f"visits = {visits!r}: expected a non-empty list of dates")
    for i, day in enumerate(visits):
        if not isinstance(day, datetime.date) or isinstance(day, datetime.datetime):
            raise DataError(f"visits[{i}] = {day!r}: expected a datetime.date (no time of day)")
    days = sorted(visits)
    if len(set(days)) != len(days):
        raise DataError(f"visits = {[d.isoformat() for d in visits]}: expected distinct dates (one photo a day)")
    wound = _draw_wound(np.random.default_rng([seed, _SERIES]), size, len(colours))
    span = max((days[-1] - days[0]).days, 1)
    (Path(folder) / "masks").mkdir(parents=True, exist_ok=True)
    written = []
    for day in days:
        rng = np.random.default_rng([seed, _SERIES, day.toordinal()])
        healing = SERIES_HEALING * (day - days[0]).days / span
        image, tissue = _photograph(rng, wound, size, colours, healing)
        name = f"wound_{day.isoformat()}.png"
        paths = (Path(folder) / name, Path(folder) / "masks" / name)
        _write_png(paths[0], image)
        _write_png(paths[1], tissue)
        written.append(paths)
    return written
