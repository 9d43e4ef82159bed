"""Image-id claims on a real PostgreSQL cluster (the production layout): the code SQLite runs
in the embedded default, raced by two processes claiming overlapping ids at once."""

from __future__ import annotations

from functools import partial

from mlcore.claims import Claims
from tests.concurrency import run_together


def _claim(url: str, batch_id: str, ids: list[str]) -> None:
    Claims(url).claim(batch_id, ids)  # a new engine in each process, as two workers have


def _race(url: str, rounds: int = 10) -> None:
    for n in range(rounds):
        shared = [f"r{n}-shared-{i:03d}" for i in range(300)]
        batches = {"left": shared + [f"r{n}-left"], "right": shared[::-1] + [f"r{n}-right"]}
        statuses = run_together(*(partial(_claim, url, f"r{n}-{batch}", ids)
                                  for batch, ids in batches.items()))
        assert statuses == [0, 0]
        claims = Claims(url)
        left, right = claims.owned_by(f"r{n}-left"), claims.owned_by(f"r{n}-right")
        assert not left & right and len(left | right) == 302  # each id has exactly one owner
        # A retry of the same batch owns its claims again; the other batch's stay theirs.
        taken = claims.claim(f"r{n}-left", batches["left"])
        assert set(taken) == right - {f"r{n}-right"} and claims.owned_by(f"r{n}-left") == left


def test_concurrent_claims_on_postgresql_never_give_an_image_two_owners(postgres_server):
    url = postgres_server.url("airflow")
    _race(url)
    claims = Claims(url)
    owned = len(claims.owned_by("r0-left"))
    assert claims.release("r0-left") == owned > 0 and claims.owned_by("r0-left") == set()


def test_the_same_race_on_sqlite(tmp_path):
    _race(f"sqlite:///{tmp_path / 'claims.db'}", rounds=3)
