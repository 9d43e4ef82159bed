"""Command-line misuse: one line that says what was expected, and a non-zero exit.

Every ``mlcore`` command parses its arguments with :class:`Parser` and the ``*_arg`` types
below, so a wrong date, a blank reason or an unknown id form is refused before any work
starts, with the accepted forms in the message. Commands raise :class:`UsageError` for
misuse found later (a day with nothing committed, an id that names nothing).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, date, datetime
from typing import NoReturn

EXIT_USAGE = 2
BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UsageError(ValueError):
    """A command used wrongly; the message says what was expected (printed as one line)."""


def one_line(text: str) -> str:
    """Messages from libraries may span lines; a CLI error is one line."""
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (usage is one ``--help`` away), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {one_line(message)} (see: {self.prog} --help)",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)


def day_arg(text: str) -> date:
    """``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date as YYYY-MM-DD (e.g. 2026-11-22), got {text!r}") from None


def time_arg(text: str) -> datetime:
    """An ISO-8601 date or time; without an offset it is UTC (the audit trail is in UTC)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an ISO-8601 date or time in UTC, e.g. 2026-11-22 or "
            f"2026-11-22T03:00:00+00:00, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def reason_arg(text: str) -> str:
    """A reason recorded in the audit trail: it must say something."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected a reason that says why (it is recorded in the audit trail), got a blank one")
    return text.strip()


def version_arg(text: str) -> str:
    """A registered model version number."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a model version number such as 3 (`mlcore model list` shows them), "
            f"got {text!r}")
    return str(int(text))


def batch_id_arg(text: str) -> str:
    """Letters, digits, ``-``, ``_`` and ``.``, starting with a letter or digit (data contract)."""
    if not BATCH_ID.match(text):
        raise argparse.ArgumentTypeError(
            "expected a batch id of letters, digits, '-', '_' and '.' (starting with a letter "
            f"or digit, at most 128 characters), got {text!r}")
    return text


def fail(message: str) -> NoReturn:
    raise UsageError(message)
