"""The served model: the registered int8 ONNX graph run by ONNX Runtime, without torch.

The graph takes ``(N, H, W)`` (or ``(N, H, W, 3)``) uint8 images of the task's shape and
returns calibrated class probabilities ``(N, classes)``: pixel normalization and the temperature are inside it (``mlcore.export``), so
serving has no constants of its own. Scoring imports this module, never torch (torch and its
CUDA wheels cost about 0.75 GiB of RSS before any data), and loads nothing whose sha256
differs from the one recorded at registration.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mlcore.registry import PinnedModel
    from mlcore.settings import Settings
    from mlcore.storage import Lake

INPUT, OUTPUT = "images", "probabilities"
ONNX_FILE = "model.onnx"  # where the MLflow ONNX flavor keeps the graph in a model folder


class ArtifactTampered(RuntimeError):
    """A model file does not match the checksum recorded on the model version."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, expected_sha256: str, what: str = "model") -> None:
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise ArtifactTampered(
            f"{what} checksum {actual[:12]}... does not match the registered "
            f"{expected_sha256[:12]}...; refusing to load"
        )


class ServedModel:
    """An ONNX Runtime session over one verified graph."""

    def __init__(self, onnx_bytes: bytes, expected_sha256: str, threads: int = 0):
        import onnxruntime as ort

        verify(onnx_bytes, expected_sha256)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # ORT's warnings about unused initializers are noise
        self.sha256 = expected_sha256
        self.session = ort.InferenceSession(onnx_bytes, options,
                                            providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.num_classes = int(self.session.get_outputs()[0].shape[1])  # the graph's, not ours

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Calibrated probabilities (N, classes) float32 for uint8 images, ``batch_size`` at a time."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        out = [self.session.run([OUTPUT], {INPUT: images[i : i + batch_size]})[0]
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)


def load_served(settings: Settings, lake: Lake, pinned: PinnedModel) -> ServedModel:
    """The pinned version's int8 ONNX graph from the registry, after checking its sha256."""
    import mlflow

    from mlcore.registry import configure_mlflow

    if not pinned.onnx_sha256:
        raise ArtifactTampered(f"version {pinned.version} records no onnx_sha256: it predates "
                               "the ONNX package; retrain or promote a newer version")
    configure_mlflow(settings, lake)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            f"models:/{pinned.name}/{pinned.version}", dst_path=tmp
        )
        data = (Path(local) / ONNX_FILE).read_bytes()
    return ServedModel(data, pinned.onnx_sha256)
