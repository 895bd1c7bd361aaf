"""Where a visit's masks come from: a registered model's predictions, or index masks given with the series.

Both give per visit the wound area and the tissue fractions of :mod:`pipeline.followup.measure`, at the
photo's own size in pixels.

- Model: the wound mask is its one ``binary_segmentation`` task, the tissue map its
  ``multiclass_segmentation`` task (classes: background, then the tissues); task names are the model's.
  A model without a tissue map (e.g. one trained on FUSeg, which has wound masks only) is measured by
  area alone; one without exactly one binary task, or with several tissue maps, is refused.
- Index masks: ``<masks>/<image file name>`` per visit, 8-bit grey, 0 = background, ``k`` = tissue ``k``
  (the ``masks/`` folder :func:`pipeline.data.wound_synthetic.generate_series` writes); wound = index > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.config import TissueParams
from pipeline.data.images import png_shape, read_index_mask
from pipeline.data.wound_layouts import tissue_names
from pipeline.errors import DataError, PipelineError
from pipeline.followup.measure import Measurement, tissue_fractions, wound_area
from pipeline.followup.series import Visit
from pipeline.registry.predictor import Predictor
from pipeline.tasks import Task


def measure_masks(visits: Sequence[Visit], masks: Path, tissues: Sequence[TissueParams]) -> list[Measurement]:
    """Measure the index mask of every visit in folder ``masks`` (module docstring); DataError naming the
    mask when it is missing, not an index PNG, has values beyond ``tissues`` or differs in size from its photo."""
    names = tissue_names([t.name for t in tissues])
    measurements = []
    for visit in visits:
        path = Path(masks) / visit.path.name
        if not path.is_file():
            raise DataError(f"{path}: no such file; expected the index mask of {visit.path} (same file name)")
        index = read_index_mask(path, len(names), names)
        photo = png_shape(visit.path)
        if index.shape != photo:
            raise DataError(f"{path}: {index.shape} px (H, W), but its photo {visit.path} is {photo}")
        measurements.append(Measurement(visit, wound_area(index), tissue_fractions(index, len(tissues))))
    return measurements


def wound_tasks(tasks: Sequence[Task], uri: str) -> tuple[Task, Task | None]:
    """The model's wound task (binary segmentation) and tissue task (multi-class segmentation, or None)."""
    binary = [t for t in tasks if t.kind == "binary_segmentation"]
    tissue = [t for t in tasks if t.kind == "multiclass_segmentation"]
    if len(binary) != 1 or len(tissue) > 1:
        raise PipelineError(
            f"model {uri}: tasks {[(t.name, t.kind) for t in tasks]}; track needs one binary_segmentation task "
            "(the wound) and at most one multiclass_segmentation task (the tissue map)"
        )
    return binary[0], (tissue[0] if tissue else None)


def model_tissues(predictor: Predictor, tissue: Task | None) -> tuple[TissueParams, ...]:
    """The tissues (names and colours) of the model's tissue task, in class order; none without one."""
    if tissue is None:
        return ()
    by_name = {t.name: t for t in predictor.model.unwrap_python_model().params.data.tissues}
    return tuple(by_name[name] for name in tissue.class_names[1:])


def measure_predictions(
    visits: Sequence[Visit], predictor: Predictor, wound: Task, tissue: Task | None
) -> list[Measurement]:
    """Measure the model's masks of every visit's photo (at the photo's size); DataError names the first
    photo the model cannot read."""
    predictions = predictor.predict_files([v.path for v in visits])
    n_tissues = 0 if tissue is None else tissue.out_channels - 1
    return [
        Measurement(
            visit,
            wound_area(p.masks[wound.name]),
            () if tissue is None else tissue_fractions(p.masks[tissue.name], n_tissues),
        )
        for visit, p in zip(visits, predictions, strict=True)
    ]
