"""The dataset folder layouts ``data.layout`` names, one object each: how a folder of it is scanned, the line an
error shows when a folder is not in it, whether its masks are tissue index masks and how the built-in synthetic
data is written in it. Which targets each layout provides (what the tasks may learn) is declared once in
:data:`pipeline.config.LAYOUT_TARGETS`, where the params are validated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import LAYOUT_TARGETS, Params
from pipeline.data import busi, synthetic, wound_layouts, wound_synthetic
from pipeline.data.scanned import SourceImage


@dataclass(frozen=True)
class DatasetLayout:
    """``scan(folder, params)``: the dataset's images, checked and sorted by id; ``expected``: the layout in one
    line; ``generate(params, folder)``: the synthetic dataset written in this layout (None: there is none)."""

    name: str
    scan: Callable[[Path, Params], list[SourceImage]]
    expected: str
    generate: Callable[[Params, Path], None] | None

    @property
    def has_tissue_masks(self) -> bool:
        """Whether the masks are tissue index masks (``0`` background, ``k`` tissue ``k - 1`` of ``data.tissues``)."""
        return "tissue" in LAYOUT_TARGETS[self.name]


def _synthetic_dfutissue(params: Params, folder: Path) -> None:
    wound = params.data.synthetic_wound
    colours = [t.colour for t in params.data.tissues]
    wound_synthetic.generate_dfutissue(folder, wound.n_trainval, wound.n_test, wound.size, params.seed, colours)


LAYOUTS = {
    layout.name: layout
    for layout in (
        DatasetLayout(
            "busi", lambda folder, params: busi.scan(folder, params.data.classes), busi.EXPECTED, synthetic.generate
        ),
        DatasetLayout(
            "dfutissue",
            lambda folder, params: wound_layouts.scan_dfutissue(folder),
            wound_layouts.DFUTISSUE_EXPECTED,
            _synthetic_dfutissue,
        ),
        DatasetLayout(
            "fuseg", lambda folder, params: wound_layouts.scan_fuseg(folder), wound_layouts.FUSEG_EXPECTED, None
        ),
    )
}
"""Every layout by name: the keys of :data:`pipeline.config.LAYOUT_TARGETS`."""
