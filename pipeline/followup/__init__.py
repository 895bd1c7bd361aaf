"""The ``track`` command of the wound workload: one wound followed over its visits.

:mod:`~pipeline.followup.series` reads the dated photos, :mod:`~pipeline.followup.sources` turns each into a
wound mask and a tissue map (a registered model's predictions, or given index masks),
:mod:`~pipeline.followup.measure` measures them, :mod:`~pipeline.followup.figure` draws the course and
:mod:`~pipeline.followup.track` writes ``track.csv``, ``track.json`` and ``track.png``.
"""
