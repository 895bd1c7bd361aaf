"""The ``track`` command of the wound workload: one wound followed over its visits.

:mod:`~pipeline.track.series` reads the dated photos, :mod:`~pipeline.track.sources` turns each into a
wound mask and a tissue map (a registered model's predictions, or given index masks),
:mod:`~pipeline.track.measure` measures them, :mod:`~pipeline.track.figure` draws the course and
:mod:`~pipeline.track.command` writes ``track.csv``, ``track.json`` and ``track.png``.
"""
