"""A tiny BUSI-layout folder written by the test itself, and params that read it (ingest tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import Params, parse_params


@dataclass(frozen=True)
class Expected:
    """What ingest should produce for one fixture image: grey ``(H, W)`` uint8, mask ``(H, W)`` {0, 1}."""

    label: str
    grey: np.ndarray
    mask: np.ndarray


def _grey(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


def save_png(path: Path, pixels: np.ndarray) -> None:
    """Write ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB) uint8 pixels as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def make_busi_folder(root: Path) -> dict[str, Expected]:
    """Write ``root/Dataset_BUSI_with_GT/{benign,malignant,normal}`` with five small images.

    Includes an RGB-encoded grey image (``benign (2).png``), an image with an extra
    ``_mask_1.png`` whose region must be OR-ed in, images of different sizes and stray files.
    Returns the expected grey pixels, merged mask and label per record id.
    """
    base = root / "Dataset_BUSI_with_GT"
    expected: dict[str, Expected] = {}

    def add(label: str, n: int, grey: np.ndarray, masks: list[np.ndarray], rgb: bool = False) -> None:
        folder = base / label
        save_png(folder / f"{label} ({n}).png", np.repeat(grey[..., None], 3, axis=2) if rgb else grey)
        for k, mask in enumerate(masks):
            suffix = "_mask" if k == 0 else f"_mask_{k}"
            save_png(folder / f"{label} ({n}){suffix}.png", mask * np.uint8(255))
        expected[f"{label}_{n:04d}"] = Expected(label, grey, np.bitwise_or.reduce(masks))

    shape = (20, 24)
    add("benign", 1, _grey(1, shape), [_box(shape, slice(4, 9), slice(5, 12))])
    add(
        "benign",
        2,
        _grey(2, (18, 30)),
        [_box((18, 30), slice(2, 6), slice(3, 8)), _box((18, 30), slice(10, 15), slice(20, 27))],
        rgb=True,
    )
    add("malignant", 1, _grey(3, shape), [_box(shape, slice(6, 16), slice(8, 14))])
    add("malignant", 12, _grey(4, (26, 22)), [_box((26, 22), slice(1, 20), slice(2, 9))])
    add("normal", 1, _grey(5, shape), [np.zeros(shape, dtype=np.uint8)])
    (base / "benign" / "Thumbs.db").write_bytes(b"stray")
    (base / "malignant" / "notes.txt").write_text("stray file, ignored\n")
    return expected


def params_for(source: str | Path, classes=("benign", "malignant"), seed: int = 42, **synthetic) -> Params:
    """Validated params reading ``source`` with ``classes``; ``synthetic`` overrides data.synthetic."""
    data = {"source": str(source), "classes": list(classes)}
    if synthetic:
        data["synthetic"] = synthetic
    return parse_params({"seed": seed, "data": data}, "test")
