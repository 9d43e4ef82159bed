"""Which code produced a record: stamped on training runs and prediction commits."""

from __future__ import annotations

import subprocess

from mlcore.settings import REPO_ROOT


def code_version() -> str:
    """The git commit of the code that is running ("unknown" outside a checkout)."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
