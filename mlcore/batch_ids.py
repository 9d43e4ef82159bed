"""Batch ids: the one rule (stated in docs/data-contract.md) and the lake keys derived from it.

A batch id becomes part of many keys (ledger, quarantine, shards, Data Docs pages), so it is
checked before anything is written: an id that fails the rule still gets a ledger entry, at
a key derived from its hash, so the batch is recorded once instead of failing every run.
"""

from __future__ import annotations

import hashlib
import re

BATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_BATCH_ID = re.compile(BATCH_ID_PATTERN)
MAX_BATCH_ID_LENGTH = 128


def is_valid_batch_id(batch_id: str) -> bool:
    """ASCII letters and digits first, then letters, digits, ``.``, ``_``, ``-``; 1–128 chars."""
    return bool(_BATCH_ID.fullmatch(batch_id)) and not batch_id.endswith("\n")


def batch_id_problem(batch_id: str) -> str | None:
    """Why ``batch_id`` breaks the rule, for the ledger; ``None`` when it is valid."""
    if is_valid_batch_id(batch_id):
        return None
    if len(batch_id) > MAX_BATCH_ID_LENGTH:
        return f"{len(batch_id)} characters > {MAX_BATCH_ID_LENGTH}"
    return f"{batch_id!r} does not match {BATCH_ID_PATTERN}"


def safe_name(batch_id: str) -> str:
    """The id itself when valid, else ``_invalid-<sha256>``: a name no valid id can take
    (valid ids start with a letter or digit) and that fits every filesystem."""
    if is_valid_batch_id(batch_id):
        return batch_id
    return "_invalid-" + hashlib.sha256(batch_id.encode("utf-8", "surrogateescape")).hexdigest()
