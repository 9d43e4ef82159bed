"""Image-id claims on a real PostgreSQL cluster (the production layout): the code SQLite runs
in the embedded default, raced by two processes claiming overlapping ids at once."""

from __future__ import annotations

import os

from mlcore.claims import Claims


def _race(url: str, rounds: int = 10) -> None:
    for n in range(rounds):
        shared = [f"r{n}-shared-{i:03d}" for i in range(300)]
        batches = {"left": shared + [f"r{n}-left"], "right": shared[::-1] + [f"r{n}-right"]}
        gate_r, gate_w = os.pipe()
        pids = []
        for batch, ids in batches.items():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os.close(gate_w)
                os.read(gate_r, 1)
                try:
                    Claims(url).claim(f"r{n}-{batch}", ids)
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            pids.append(pid)
        os.close(gate_r)
        os.write(gate_w, b"go")
        os.close(gate_w)
        assert [os.waitpid(p, 0)[1] for p in pids] == [0, 0]
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
