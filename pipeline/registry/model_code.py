"""MLflow "model from code" entry point of the registered model (logged as ``python_model=`` this file).

MLflow runs this file when it loads the model, instead of unpickling a Python object; the model's
``code/pipeline`` copy of this package makes it importable where ``pipeline`` is not installed.
"""

from mlflow.models import set_model

from pipeline.registry.pyfunc import MultiTaskPyfunc

set_model(MultiTaskPyfunc())
