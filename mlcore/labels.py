"""``labels.csv`` -> filename -> class index, judged row by row.

Each physical line is decoded and parsed on its own, so one bad byte or one stray quote
is a reason against that row only; the other rows keep their labels. A file that cannot be
read as a labels file at all (UTF-16/32, binary, no row parseable) is ``labels_unreadable``:
the caller rejects the batch rather than ingest its images silently unlabeled.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache

from mlcore.layout import LABELS_FILE

_INDEX = re.compile(r"0|[1-9][0-9]{0,3}")  # ASCII only: '²', '٣', '０' are not class indexes
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 (and UTF-32 LE starts with FF FE too)


@dataclass
class Rejection:
    key: str
    reason: str
    detail: str = ""


class LabelsUnreadable(ValueError):
    """``labels.csv`` is not a readable labels file; the message says why."""


@lru_cache(maxsize=16)
def _by_name(classes: tuple[str, ...] | None) -> dict[str, int]:
    if classes is None:  # no task given (tests, one-task tools): the deployment's default
        from mlcore.task import default_task

        classes = default_task().classes
    return {name.lower(): i for i, name in enumerate(classes)}


def parse_label(value: str, classes: tuple[str, ...] | None = None) -> int:
    """A class name of ``classes`` (case-insensitive) or an ASCII class index -> class index;
    -1 if neither (an index past the task's last class included)."""
    value = value.strip()
    by_name = _by_name(classes)
    if _INDEX.fullmatch(value):
        index = int(value)
        return index if index < len(by_name) else -1
    return by_name.get(value.lower(), -1)


def _rows(raw: bytes):
    """(line number, decoded line | None on a bad byte, the decode error) per physical line."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for line_no, line in enumerate(raw.splitlines(), start=1):
        try:
            yield line_no, line.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield line_no, None, exc


def parse_labels(raw: bytes, filenames: set[str], *, classes: tuple[str, ...] | None = None
                 ) -> tuple[dict[str, int], list[Rejection]]:
    """``filename,label`` rows -> {filename: class of ``classes``}, plus one issue per bad row.

    Unknown labels map to -1 so the row-level suite quarantines that file (``unknown_label``);
    a row naming no file in the batch, a malformed row or a bad byte only costs that row.
    Raises :class:`LabelsUnreadable` when the file as a whole is not a labels file.
    """
    if raw.startswith(_WIDE_BOMS) or b"\x00" in raw:
        raise LabelsUnreadable("not UTF-8 text (UTF-16/32 or binary content)")
    labels: dict[str, int] = {}
    issues: list[Rejection] = []
    parsed = candidates = 0
    for line_no, text, error in _rows(raw):
        key = f"{LABELS_FILE}:{line_no}"
        if text is None:
            candidates += 1
            issues.append(Rejection(key, "labels_encoding", f"not UTF-8: {error}"))
            continue
        if not text.strip():
            continue
        try:
            row = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            candidates += 1
            issues.append(Rejection(key, "labels_malformed", str(exc)))
            continue
        if line_no == 1 and [c.strip().lower() for c in row] == ["filename", "label"]:
            continue
        candidates += 1
        if len(row) != 2:
            issues.append(Rejection(key, "labels_malformed", f"{len(row)} fields"))
            continue
        parsed += 1
        name, label = row[0].strip(), parse_label(row[1], classes)
        if name not in filenames:
            issues.append(Rejection(key, "label_for_missing_file", name))
            continue
        if name in labels:
            reason = "duplicate_label_row" if labels[name] == label else "conflicting_labels"
            issues.append(Rejection(key, reason, name))
            if labels[name] != label:
                labels[name] = -1
            continue
        labels[name] = label
    if candidates and not parsed:
        raise LabelsUnreadable(f"none of its {candidates} rows is a filename,label row")
    return labels, issues
