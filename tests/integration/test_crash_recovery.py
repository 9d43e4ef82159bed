"""A scoring process SIGKILLed between its data files and its manifest publishes nothing,
and the rerun commits a complete partition: no duplicate and no missing row."""

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import torch

from mlcore.data import CuratedRow, write_shards
from mlcore.export import served_model
from mlcore.model import FashionCNN
from mlcore.registry import PinnedModel
from mlcore.score import (
    commit_partition,
    count_inputs,
    read_predictions,
    score_shard,
    shards_in_interval,
)
from mlcore.storage import LocalLake

START = datetime(2026, 11, 22, 3, tzinfo=UTC)
END = START + timedelta(days=1)

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, torch
    from datetime import datetime, timedelta, UTC
    from mlcore.export import served_model
    from mlcore.model import FashionCNN
    from mlcore.registry import PinnedModel
    from mlcore.score import score_shard, shards_in_interval
    from mlcore.settings import Settings
    from mlcore.storage import LocalLake
    start = datetime(2026, 11, 22, 3, tzinfo=UTC); end = start + timedelta(days=1)
    lake = LocalLake(sys.argv[1]); settings = Settings(home=sys.argv[1])
    torch.manual_seed(0); model = served_model(FashionCNN().eval())
    pinned = PinnedModel("fashion-classifier", "1", "run", "0" * 64)
    for shard in shards_in_interval(lake, start, end):
        score_shard(lake, settings, pinned, shard, start, end, end, "killed-run", model)
    print("parts written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dies before commit_partition
""")


def test_sigkill_before_manifest_then_rerun_commits_complete_partition(tmp_path, settings):
    lake = LocalLake(tmp_path)
    rng = np.random.default_rng(1)
    for b in range(3):
        rows = [CuratedRow(f"b{b}-{i:04d}", rng.integers(0, 255, 784, dtype=np.uint8).tobytes(),
                           f"landing/b{b}/{i}.png", None) for i in range(200)]
        write_shards(lake, rows, f"b{b}", START + timedelta(hours=b + 1), shard_rows=64)
    shards = shards_in_interval(lake, START, END)

    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "parts written" in proc.stdout
    prefix = "predictions/dt=2026-11-22"
    assert any(k.endswith(".parquet") for k in lake.list(prefix))
    assert not lake.exists(f"{prefix}/_manifest.json")

    torch.manual_seed(0)
    model = served_model(FashionCNN().eval())
    pinned = PinnedModel("fashion-classifier", "1", "run", "0" * 64)
    parts = [score_shard(lake, settings, pinned, s, START, END, END, "rerun", model) for s in shards]
    manifest = commit_partition(lake, settings, pinned, START.date(), parts, shards,
                                count_inputs(lake, shards, START, END), "rerun", END)
    ids = read_predictions(lake, START.date()).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 600 == manifest["rows"]
    assert set(ids) == {f"b{b}-{i:04d}" for b in range(3) for i in range(200)}
