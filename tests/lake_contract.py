"""Behaviour every lake (folder or S3) must show; each lake's test module runs it on its own."""

from __future__ import annotations

import pytest

from mlcore.layout import landing_file


def assert_landing_is_never_overwritten_or_deleted(lake) -> None:
    key = landing_file("b1", "x.png")
    lake.write_bytes(key, b"upload")
    with pytest.raises(PermissionError):
        lake.write_bytes(key, b"changed")
    with pytest.raises(PermissionError):
        lake.delete(key)
    assert lake.read_bytes(key) == b"upload"
