"""Records that cross task boundaries whole: dataclasses holding dataclasses, through XCom.

Airflow's serde turns a dataclass into ``dataclasses.asdict`` (nested records become plain
dicts on the way back). A :class:`Record` hands serde its fields one level deep instead, so
each nested dataclass is encoded with its own class name and comes back as itself. The
deployment's ``[core] allowed_deserialization_classes`` must admit ``mlcore.*``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Self


class Record:
    """Mixin for a frozen dataclass whose fields include other dataclasses."""

    def serialize(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def deserialize(cls, data: dict[str, Any], version: int) -> Self:
        return cls(**data)
