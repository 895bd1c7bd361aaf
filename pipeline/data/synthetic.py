"""A deterministic BUSI-like synthetic dataset: B-mode-looking speckle images with lesion masks.

Each image is drawn from its own ``numpy.random.Generator`` seeded by ``(seed, class, index)``,
so adding images or classes never changes the existing ones, and the PNG bytes are identical
across runs. The files use the BUSI layout (:mod:`pipeline.data.busi`).

What tells the classes apart (and what deliberately does not):

* every image: tissue layers whose echogenicity varies with depth, slow heterogeneity, fully
  developed speckle (Rayleigh envelope of PSF-blurred complex scatterers) and 0-3 hypo-echoic fat
  lobules that are *not* lesions, so segmentation is more than thresholding dark pixels;
* benign: oval, wider-than-tall, circumscribed (sharp, smooth) margin, sometimes gently
  macro-lobulated, often posterior acoustic enhancement;
* malignant: irregular, spiculated margin (radius modulated by random harmonics plus spikes),
  taller-than-wide tendency, indistinct edge, usually posterior acoustic shadowing;
* normal: no lesion, empty mask;
* lesion echogenicity is drawn from the *same* range for benign and malignant, so brightness alone
  does not tell the class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.config import CLASS_NAMES, Params
from pipeline.errors import DataError

LESION_LEVEL = (0.12, 0.45)
"""Range of lesion echogenicity relative to the surrounding tissue (both lesion classes)."""
ATYPICAL_MARGIN = 0.1
"""Fraction of lesions drawn with the other class's margin (circumscribed cancers, spiculated benign)."""


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Low-frequency noise ``(size, size)`` float64 with zero mean and unit standard deviation."""
    field = gaussian_filter(rng.standard_normal((size, size)), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def _tissue(rng: np.random.Generator, size: int) -> np.ndarray:
    """Mean echogenicity ``(size, size)`` float64 in about 0.2..1: skin line, fat, gland, depth loss."""
    depth = np.linspace(0.0, 1.0, size)[:, None]
    skin = rng.uniform(0.03, 0.08)
    gland_top, gland_bottom = rng.uniform(0.18, 0.32), rng.uniform(0.7, 0.9)
    profile = (
        0.45
        + 0.5 * np.exp(-(((depth - skin) / 0.02) ** 2))
        + 0.25 / (1 + np.exp(-(depth - gland_top) / 0.03))
        - 0.25 / (1 + np.exp(-(depth - gland_bottom) / 0.04))
    ) * np.exp(-rng.uniform(0.2, 0.6) * depth)
    return np.clip(profile * (1 + 0.18 * _smooth_field(rng, size, size / 10)), 0.05, None)


def _blob(size: int, centre: tuple[float, float], axes: tuple[float, float], angle: float, radius_fn) -> np.ndarray:
    """Boolean ``(size, size)`` region ``rho < radius_fn(theta)`` in a rotated, scaled polar frame.

    ``centre`` = (row, col) px, ``axes`` = (vertical, horizontal) semi-axes px, ``angle`` rad;
    ``radius_fn`` is tabulated at 1024 angles and interpolated.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = rows - centre[0], cols - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / axes[1]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / axes[0]
    angles = np.linspace(-np.pi, np.pi, 1024, endpoint=False)
    radius = np.interp(np.arctan2(v, u), angles, radius_fn(angles), period=2 * np.pi)
    return np.hypot(u, v) < radius


def _harmonics(rng: np.random.Generator, orders: range, amplitude: float):
    """``theta -> sum_k a_k cos(k theta + phi_k)`` with ``a_k`` uniform in ``[0, amplitude]``."""
    ks = np.array(orders, dtype=np.float64)
    amps, phases = rng.uniform(0, amplitude, ks.size), rng.uniform(0, 2 * np.pi, ks.size)
    return lambda t: np.sum(amps * np.cos(np.multiply.outer(t, ks) + phases), axis=-1)


def _spikes(rng: np.random.Generator, count: int):
    """``theta -> sum`` of ``count`` triangular spiculae: height 0.25-0.7, half-width 0.1-0.22 rad."""
    where = rng.uniform(-np.pi, np.pi, count)
    height, width = rng.uniform(0.25, 0.7, count), rng.uniform(0.1, 0.22, count)

    def radius(t: np.ndarray) -> np.ndarray:
        gap = np.abs((np.subtract.outer(t, where) + np.pi) % (2 * np.pi) - np.pi)
        return np.sum(height * np.clip(1 - gap / width, 0, None), axis=-1)

    return radius


def _outline(base: float, *terms):
    """``theta -> base + sum of terms(theta)``: a lesion's relative radius as a function of angle."""
    return lambda t: sum((term(t) for term in terms), np.full_like(t, base))


def _lesion(rng: np.random.Generator, label: str, size: int) -> tuple[np.ndarray, dict]:
    """Lesion mask ``(size, size)`` bool and its class-specific appearance parameters."""
    malignant = label == "malignant"
    if malignant != (rng.random() < ATYPICAL_MARGIN):
        outline = _outline(0.9, _harmonics(rng, range(3, 11), 0.07), _spikes(rng, int(rng.integers(2, 12))))
    else:
        outline = _outline(1.0, _harmonics(rng, range(2, 5), rng.choice([0.02, 0.07])))
    if malignant:
        aspect = rng.uniform(0.7, 1.5)  # height / width: taller-than-wide tendency
        edge_sigma = rng.uniform(0.6, 1.2)  # indistinct margin
        posterior = -rng.uniform(0.25, 0.6) if rng.random() < 0.75 else 0.0  # shadowing
    else:
        aspect = rng.uniform(0.5, 1.0)  # "parallel" orientation
        edge_sigma = rng.uniform(0.3, 0.7)  # circumscribed margin
        posterior = rng.uniform(0.1, 0.4) if rng.random() < 0.6 else 0.0  # enhancement
    mean_radius = rng.uniform(0.07, 0.2) * size
    axes = (mean_radius * np.sqrt(aspect), mean_radius / np.sqrt(aspect))
    centre = (rng.uniform(0.3, 0.62) * size, rng.uniform(0.28, 0.72) * size)
    mask = _blob(size, centre, axes, rng.uniform(-0.3, 0.3), outline)
    level = rng.uniform(*LESION_LEVEL)
    return mask, {"level": level, "edge_sigma": edge_sigma * size / 128, "posterior": posterior}


def _posterior(mask: np.ndarray, strength: float) -> np.ndarray:
    """Multiplicative gain ``(H, W)`` below the lesion: < 1 for shadowing, > 1 for enhancement."""
    size = mask.shape[0]
    columns = gaussian_filter(mask.any(axis=0).astype(np.float64), size / 60 + 0.5)
    rows = np.arange(size)[:, None]
    lesion_rows = np.flatnonzero(mask.any(axis=1))
    bottom, centre_row = lesion_rows.max(), lesion_rows.mean()
    below = np.clip((rows - centre_row) / max(bottom - centre_row, 1.0), 0, 1)
    fade = np.exp(-np.clip(rows - bottom, 0, None) / (0.6 * size))
    return 1 + strength * below * fade * columns[None, :]


def synthesize(seed: int, label: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of class ``label``: grey image ``(size, size)`` uint8 and mask ``(size, size)``
    uint8 in {0, 1} (all zero for ``normal``)."""
    rng = np.random.default_rng([seed, CLASS_NAMES.index(label), index])
    echo = _tissue(rng, size)
    for _ in range(int(rng.integers(0, 4))):
        lobule = _blob(
            size,
            (rng.uniform(0.1, 0.35) * size, rng.uniform(0, 1) * size),
            (rng.uniform(0.02, 0.05) * size, rng.uniform(0.08, 0.2) * size),
            rng.uniform(-0.2, 0.2),
            _outline(1.0),
        )
        echo *= 1 - rng.uniform(0.2, 0.5) * gaussian_filter(lobule.astype(np.float64), 1.0)
    mask = np.zeros((size, size), dtype=bool)
    if label != "normal":
        mask, look = _lesion(rng, label, size)
        echo *= _posterior(mask, look["posterior"])
        inside = gaussian_filter(mask.astype(np.float64), look["edge_sigma"])
        echo *= 1 - (1 - look["level"]) * inside
    scatter = rng.standard_normal((2, size, size))
    envelope = np.hypot(*(gaussian_filter(s, (1.1, 0.7)) for s in scatter))
    speckle = envelope / envelope.mean()
    image = 255 * np.clip(0.85 * echo * speckle, 0, 1) ** 0.8
    return np.round(image).astype(np.uint8), mask.astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write ``(H, W)`` uint8 as an 8-bit grey PNG with fixed settings and no metadata."""
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)


def generate(params: Params, folder: Path) -> None:
    """Write the synthetic dataset in BUSI layout under ``folder``: ``<class>/<class> (<n>).png``
    and ``<class> (<n>)_mask.png`` (0/255), n = 1.., for the classes in ``params.data.classes`` with
    ``params.data.synthetic.n_<class>`` images of ``size`` px each, from ``params.seed``."""
    cfg = params.data.synthetic
    counts = {"normal": cfg.n_normal, "benign": cfg.n_benign, "malignant": cfg.n_malignant}
    for label in params.data.classes:
        if counts[label] == 0:
            raise DataError(f"data.synthetic.n_{label} = 0 but data.classes lists {label!r}")
        class_dir = Path(folder) / label
        class_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, counts[label] + 1):
            image, mask = synthesize(params.seed, label, n, cfg.size)
            _write_png(class_dir / f"{label} ({n}).png", image)
            _write_png(class_dir / f"{label} ({n})_mask.png", mask * np.uint8(255))
