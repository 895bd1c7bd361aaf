"""Model registry: the ``promote`` stage (:mod:`.promote`) registers the best validated fold model or fold
ensemble (:mod:`.candidate`, :mod:`.ensemble`) as an MLflow pyfunc model (:mod:`.pyfunc`) and moves the
``champion`` alias when the gate (:mod:`.gate`) passes; ``predict`` (:mod:`.predict`, Python API in
:mod:`.predictor`) runs a registered model on image files.
"""
