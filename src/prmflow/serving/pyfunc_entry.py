"""Models-from-code entry point that MLflow logs with the registered model."""

from mlflow.models import set_model

from prmflow.serving.scorer import PRMPyfunc

set_model(PRMPyfunc())
