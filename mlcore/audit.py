"""An append-only audit trail in the lake (``_state/audit/``).

Each entry is its own object, created with a create-if-absent write and never rewritten.
Its key is derived from what happened (action, target, and the run or time that did it),
so a retried task that records the same action again adds no duplicate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mlcore.layout import AUDIT, audit_key

if TYPE_CHECKING:
    from mlcore.storage import Lake

ACTIONS = ("promote", "force_promote", "rollback", "gate_reject", "quarantine_reprocess",
           "manual_trigger")


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    at: str  # ISO-8601 UTC: when it happened (a manual trigger's run_after, a CLI action's clock)
    action: str
    target: str
    reason: str
    details: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        digest = hashlib.sha256(f"{self.action}|{self.target}|{self.at}|{self.actor}".encode())
        return audit_key(self.at, self.action, digest.hexdigest())


def record(lake: Lake, action: str, target: str, *, actor: str, at: datetime, reason: str,
           **details) -> AuditEntry:
    """Append one entry (idempotent for the same actor, time, action and target)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; expected one of {ACTIONS}")
    entry = AuditEntry(actor, at.isoformat(), action, target, reason, details)
    lake.write_if_absent(entry.key, json.dumps(asdict(entry), sort_keys=True).encode())
    return entry


def record_manual_trigger(lake: Lake, dag_run, *, target: str, params: dict
                          ) -> AuditEntry | None:
    """Audit a manual DAG run that changes what it does through ``params``: who triggered
    it, when (``run_after``, the trigger time, not the logical date), which run. Any other
    run records nothing. ``dag_run`` is Airflow's run object, read only by attribute."""
    if dag_run.run_type != "manual":
        return None
    user = getattr(dag_run, "triggering_user_name", None) or "unknown"
    return record(lake, "manual_trigger", target, actor=user, at=dag_run.run_after,
                  reason="manual trigger with params", params=dict(params),
                  run_id=dag_run.run_id)


def entries(lake: Lake, action: str | None = None, *, since: datetime | None = None,
            until: datetime | None = None) -> list[AuditEntry]:
    """Entries in time order, filtered by action and ``[since, until)``."""
    out = []
    for key in lake.list(AUDIT):
        entry = AuditEntry(**json.loads(lake.read_bytes(key)))
        when = datetime.fromisoformat(entry.at)
        if (action and entry.action != action) or (since and when < since) or (
            until and when >= until
        ):
            continue
        out.append(entry)
    return sorted(out, key=lambda e: (e.at, e.action, e.target))
