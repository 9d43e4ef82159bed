"""Run a script in a fresh interpreter where importing torch fails: proof that a code path
(scoring, serving) never imports torch, whatever its imports pull in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")
sys.meta_path.insert(0, _NoTorch())
"""
_END = """
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
sys.stdout.flush()
import os; os._exit(0)  # skip interpreter teardown: ONNX Runtime's thread pool may abort there
"""


def run_without_torch(script: str, *args: object, timeout: float) -> subprocess.CompletedProcess:
    """``script`` (its ``sys.argv[1:]`` are ``args``), then a check that torch never loaded."""
    code = _BLOCK_TORCH + textwrap.dedent(script) + _END
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=Path.cwd())
