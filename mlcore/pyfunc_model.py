"""MLflow "model from code" for the classifier: MLflow stores this file, not a pickle.

Loading it through ``mlflow.pyfunc.load_model`` rebuilds :class:`~mlcore.model.FashionCNN`
from the safetensors artifact after checking its sha256, exactly like the batch scorer.
"""

from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class FashionClassifier(PythonModel):
    def load_context(self, context) -> None:
        from mlcore.model import load_weights

        weights = Path(context.artifacts["weights"]).read_bytes()
        expected = Path(context.artifacts["checksum"]).read_text().strip()
        self.model = load_weights(weights, expected)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        """(N, 28, 28) uint8 images -> (N, 10) float32 class probabilities."""
        from mlcore.model import predict_proba

        return predict_proba(self.model, np.asarray(model_input, dtype=np.uint8))


mlflow.models.set_model(FashionClassifier())
