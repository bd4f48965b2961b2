"""The registered model's code (MLflow models-from-code): executed on load, so nothing is unpickled.

``mlflow.pyfunc.log_model(python_model=<this file>)`` stores this file beside the Hugging Face
folder; ``mlflow.pyfunc.load_model`` runs it and uses the model named by ``set_model``.
"""

from mlflow.models import set_model
from unlearnops.components.register.register import HFCausalLM

set_model(HFCausalLM())
