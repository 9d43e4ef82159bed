"""Batch scoring throughput: the served int8 ONNX graph vs fp32 torch vs a per-image handler.

Setup (untimed, in separate processes so it does not count towards peak RSS): N unlabeled
images (Fashion-MNIST train images, tiled as needed, each with a unique image_id) are
written as curated shards (``mlcore.data.write_shards``, ``settings.shard_rows`` per shard)
into a temporary LocalLake under one logical date. The model is a ``FashionCNN`` with a
fixed seed (random weights: the throughput does not depend on them), passed as ``model=``
with a dummy ``PinnedModel``, so no MLflow is involved. The served graph is built from it
as registration does (``mlcore.export``: ONNX, static int8 QDQ per-channel, calibrated on
1,024 train images).

Timed, images/s:
  (a) end to end, as ``batch_score`` does it: ``mlcore.score.score_run`` (input_shards ->
      score_shard for every shard -> commit: count_inputs, Great Expectations and one Delta
      commit that replaces the partition), with the served int8 graph in ONNX Runtime, in a
      child process that never imports torch (its peak RSS is the scoring task's);
  (c) the served graph's bare forward pass on preloaded uint8 images (same child), in
      batches of ``settings.score_batch_size``;
  (a32), (c32) the same with the fp32 torch model rewritten by
      ``mlcore.model.for_inference`` (the scoring path before the ONNX package);
  (b) a naive per-image loop, as a Flask ``/predict`` handler would do it: PIL.Image.open
      on the PNG bytes, to tensor, torch forward on a batch of one, softmax, JSON answer
      (PNGs are encoded before timing; on a sample of at most --b-sample images).

    .venv/bin/python bench/score.py [--n 100000] [--b-sample 5000] [--repeat 1]
                                    [--batch-size B] [--threads T]
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _report

LOGICAL_DATE = datetime(2024, 1, 1, tzinfo=UTC)
BATCH_ID = "bench-score"
GOAL_A_OVER_B = 10.0
GOAL_A_OVER_C = 0.9
GOAL_A_OVER_A32 = 1.8
GOAL_RSS_BYTES = int(0.6 * _report.GIB)


def tiled_images(n: int):
    """N Fashion-MNIST train images, the train split repeated as often as needed."""
    import numpy as np

    from mlcore.data import load_fashion_mnist
    from mlcore.settings import Settings

    images, _ = load_fashion_mnist(Settings().fmnist_dir, "train")
    reps = -(-n // len(images))
    return np.tile(images, (reps, 1, 1))[:n] if reps > 1 else images[:n].copy()


def build_shards(lake_root: str, n: int, shard_rows: int) -> dict:
    """Write N unlabeled curated rows as shards (runs in a child process)."""
    import hashlib

    from mlcore.data import CuratedRow, write_shards
    from mlcore.storage import LocalLake

    started = time.perf_counter()
    images = tiled_images(n)
    rows = [
        CuratedRow(
            image_id=hashlib.sha256(f"bench-score-{i}".encode()).hexdigest(),
            pixels=images[i].tobytes(),
            source_key=f"landing/{BATCH_ID}/img-{i:07d}.png",
            label=None,
        )
        for i in range(n)
    ]
    keys = write_shards(LocalLake(Path(lake_root)), rows, BATCH_ID, ingested_at=LOGICAL_DATE, shard_rows=shard_rows)
    return {"shards": len(keys), "seconds": time.perf_counter() - started}


def build_graph(path: str, seed: int) -> dict:
    """The int8 graph registration would build for the seeded model (runs in a child)."""
    import torch

    from mlcore.export import quantize_int8, to_onnx
    from mlcore.model import FashionCNN
    from mlcore.serving import sha256_hex

    started = time.perf_counter()
    torch.manual_seed(seed)
    graph = quantize_int8(to_onnx(FashionCNN().eval()), tiled_images(1024))
    Path(path).write_bytes(graph)
    return {"sha256": sha256_hex(graph), "seconds": time.perf_counter() - started}


def run_served(lake_root: str, graph_path: str, sha256: str, n: int, rounds: int,
               batch_size: int | None) -> dict:
    """(a) and (c) with the served int8 graph, in a process that never imports torch."""
    import sys

    # The same one-off imports the parent does before timing: (a) times scoring, not imports.
    import great_expectations  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import mlcore.validation  # noqa: F401
    from mlcore.registry import PinnedModel
    from mlcore.runtime import runtime_for
    from mlcore.score import ScoringRun, ScoringWindow, score_run
    from mlcore.serving import ServedModel
    from mlcore.settings import Settings

    overrides = {"score_batch_size": batch_size} if batch_size else {}
    rt = runtime_for(Settings(home=Path(lake_root).parent, lake_uri=lake_root, **overrides))
    bs = rt.settings.score_batch_size
    model = ServedModel(Path(graph_path).read_bytes(), sha256)
    pinned = PinnedModel("fashion-classifier", "0", "bench-run", "0" * 64, sha256)
    window = ScoringWindow(LOGICAL_DATE, LOGICAL_DATE + timedelta(days=1), LOGICAL_DATE.date())
    run = ScoringRun.of(window, pinned, run_id="bench-int8")
    import numpy as np

    # Warm-up on blank images of the task's shape: loading the data set here would put it
    # into the peak RSS that (a) reports as the scoring task's.
    model.predict_proba(np.zeros((bs, *rt.task.shape), np.uint8), bs)

    def run_a() -> dict[str, float]:
        sw = _report.Stopwatch()
        sw.patch(ServedModel, "predict_proba", "forward")
        try:
            with _report.timer() as total:
                commit = score_run(rt, run, model=model).commit
        finally:
            sw.restore()
        assert commit.rows == n, (commit.rows, n)
        return {"seconds": total.seconds, "forward": sw.seconds["forward"]}

    a_runs = [run_a()]
    rss_a = _report.vm_hwm()
    images = tiled_images(n)
    c_runs = []
    for i in range(rounds):
        if i:
            a_runs.append(run_a())
        with _report.timer() as t:
            model.predict_proba(images, bs)
        c_runs.append(t.seconds)
    torch_loaded = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    return {"a": a_runs, "c": c_runs, "rss_after_a": rss_a, "torch_imported": torch_loaded}


def main() -> None:
    p = _report.parser(__doc__.splitlines()[0], default_n=100_000)
    p.add_argument("--b-sample", type=int, default=5_000,
                   help="images timed in the per-image loop (b) (default 5,000)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of a, b, c (interleaved); medians are reported (default 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="override Settings.score_batch_size for (a) and (c)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for a, b and c (default: torch's choice)")
    args = p.parse_args()
    n, rounds = args.n, max(1, args.repeat)

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        lake_root = Path(tmp) / "lake"
        with _report.timer() as imports:
            import io
            import json

            import deltalake  # noqa: F401
            import great_expectations  # noqa: F401
            import numpy as np
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
            import torch
            from PIL import Image

            import mlcore.model
            import mlcore.score
            import mlcore.validation
            from mlcore.data import CLASSES
            from mlcore.images import encode_png
            from mlcore.model import FashionCNN, for_inference, to_input
            from mlcore.registry import PinnedModel
            from mlcore.runtime import runtime_for
            from mlcore.score import ScoringRun, ScoringWindow, score_run
            from mlcore.settings import Settings

        overrides = {"score_batch_size": args.batch_size} if args.batch_size else {}
        settings = Settings(home=Path(tmp), lake_uri=str(lake_root), **overrides)
        bs = settings.score_batch_size
        if args.threads:
            torch.set_num_threads(args.threads)
        report = _report.Report("score", f"score: {n:,} curated images", {
            "n": n, "repeat": rounds, "score_batch_size": bs, "shard_rows": settings.shard_rows,
            "lake": "LocalLake (temp dir)", "lake_fs": _report.fs_type(Path(tmp)),
        })
        seeded, setup_rss = _report.run_in_child(build_shards, str(lake_root), n,
                                                 settings.shard_rows)

        graph_path = str(Path(tmp) / "int8.onnx")
        graph, _ = _report.run_in_child(build_graph, graph_path, settings.seed)
        served, served_rss = _report.run_in_child(run_served, str(lake_root), graph_path,
                                                  graph["sha256"], n, rounds, args.batch_size)
        assert not served["torch_imported"]

        class TorchScorer:
            """The fp32 torch model behind the served model's interface."""

            def __init__(self, module):
                self.module = module

            def predict_proba(self, images, batch_size=256):
                return mlcore.model.predict_proba(self.module, images, batch_size)

        rt = runtime_for(settings)
        torch.manual_seed(settings.seed)
        model = FashionCNN().eval()  # (b): as trained
        scoring_model = for_inference(model)  # (a32) and (c32): the pre-ONNX scoring path
        pinned = PinnedModel("fashion-classifier", "0", "bench-run", "0" * 64)
        window = ScoringWindow(LOGICAL_DATE, LOGICAL_DATE + timedelta(days=1), LOGICAL_DATE.date())
        run = ScoringRun.of(window, pinned, run_id="bench")
        with torch.inference_mode():  # one warm-up pass: oneDNN primitives are built lazily
            scoring_model(torch.zeros(bs, 1, 28, 28))
            model(torch.zeros(1, 1, 28, 28))

        def run_a() -> dict[str, float]:
            """Curated shards -> committed partition, as the batch_score DAG does it."""
            sw = _report.Stopwatch()
            sw.patch(mlcore.model, "predict_proba", "forward")
            sw.patch(mlcore.validation, "run_suite", "gx")
            # The steps of score_run, timed where it calls them.
            for step in ("input_shards", "score_shard", "count_inputs", "commit_partition"):
                sw.patch(mlcore.score, step, step)
            try:
                with _report.timer() as total:
                    result = score_run(rt, run, model=TorchScorer(scoring_model))
            finally:
                sw.restore()
            assert result.commit.rows == n, (result.commit.rows, n)
            return {"seconds": total.seconds, "list": sw.seconds["input_shards"],
                    "score": sw.seconds["score_shard"], "forward": sw.seconds["forward"],
                    "count": sw.seconds["count_inputs"], "commit": sw.seconds["commit_partition"],
                    "gx": sw.seconds["gx"], "shards": len(result.shards)}

        def run_b(pngs: list[bytes]) -> float:
            """A Flask /predict handler per image: decode PNG, tensor, forward(1), JSON."""
            answers = []
            with _report.timer() as t:
                for data in pngs:
                    img = Image.open(io.BytesIO(data))
                    arr = np.asarray(img.convert("L"), dtype=np.uint8)
                    with torch.inference_mode():
                        probs = torch.softmax(model(to_input(arr[None])), dim=1)[0]
                    cls = int(probs.argmax())
                    answers.append(json.dumps({"label": CLASSES[cls],
                                               "confidence": float(probs[cls])}))
            assert len(answers) == len(pngs)
            return t.seconds

        def run_c(x_all) -> float:
            """The bare forward pass over preloaded normalized tensors."""
            with torch.inference_mode(), _report.timer() as t:
                for i in range(0, len(x_all), bs):
                    scoring_model(x_all[i : i + bs])
            return t.seconds

        a_runs = [run_a()]
        rss_a = _report.peak_rss()  # imports + model + (a) only: the goal figure

        images = tiled_images(n)
        n_b = min(n, args.b_sample)
        pngs = [encode_png(img) for img in images[:n_b]]
        x_all = to_input(images)
        del images
        b_runs, c_runs = [run_b(pngs)], [run_c(x_all)]
        for _ in range(rounds - 1):
            a_runs.append(run_a())
            b_runs.append(run_b(pngs))
            c_runs.append(run_c(x_all))
        del pngs, x_all

        a_s = _report.median([r["seconds"] for r in a_runs])
        b_s, c_s = _report.median(b_runs), _report.median(c_runs)
        rate_a32, rate_b, rate_c32 = n / a_s, n_b / b_s, n / c_s
        a8_s = _report.median([r["seconds"] for r in served["a"]])
        rate_a, rate_c = n / a8_s, n / _report.median(served["c"])
        rss_a = served["rss_after_a"]
        part = {k: _report.median([r[k] for r in a_runs]) for k in a_runs[0]}
        report.add_table(
            "images/s (higher is better)" + (f", median of {rounds} rounds" if rounds > 1 else ""),
            ["", "(a) end to end, int8", "(c) bare int8 forward", "(a32) end to end, fp32",
             "(c32) bare fp32 forward", "(b) per-image loop"],
            [
                ["images/s", _report.fmt(rate_a), _report.fmt(rate_c), _report.fmt(rate_a32),
                 _report.fmt(rate_c32), _report.fmt(rate_b)],
                ["images timed", f"{n:,}", f"{n:,}", f"{n:,}", f"{n:,}",
                 f"{n_b:,}" + (" (sample)" if n_b < n else "")],
            ],
            data={"a": {"images_per_s": rate_a, "images": n, "breakdown": served["a"]},
                  "c": {"images_per_s": rate_c, "images": n, "seconds": served["c"]},
                  "a32": {"images_per_s": rate_a32, "images": n,
                          "seconds": [r["seconds"] for r in a_runs], "breakdown": a_runs},
                  "b": {"images_per_s": rate_b, "images": n_b, "seconds": b_runs},
                  "c32": {"images_per_s": rate_c32, "images": n, "seconds": c_runs}},
        )
        report.add("a_images_per_s", "(a) end to end, served int8 ONNX", rate_a, "images/s")
        report.add("c_images_per_s", "(c) bare forward, served int8 ONNX", rate_c, "images/s")
        report.add("a32_images_per_s", "(a32) end to end, fp32 torch", rate_a32, "images/s")
        report.add("c32_images_per_s", "(c32) bare forward, fp32 torch", rate_c32, "images/s")
        report.add("b_images_per_s", "(b) per-image loop", rate_b, "images/s")
        report.add("a_over_a32", "ratio a/a32 (int8 over fp32, end to end)", rate_a / rate_a32)
        report.add("a_over_c", "ratio a/c", rate_a / rate_c)
        report.add("a_over_b", "ratio a/b", rate_a / rate_b)
        report.add("a32_over_b", "ratio a32/b", rate_a32 / rate_b)
        report.add("a_forward_s", "(a)   of which the int8 forward pass",
                   _report.median([r["forward"] for r in served["a"]]), "s")
        report.add("a32_score_s", f"(a32) score_shard x{a_runs[0]['shards']}", part["score"], "s")
        report.add("a32_forward_s", "(a32)   of which predict_proba (forward+softmax)",
                   part["forward"], "s")
        report.add("a32_count_s", "(a32) count_inputs", part["count"], "s")
        report.add("a32_commit_s", "(a32) commit_partition", part["commit"], "s")
        report.add("a32_gx_s", "(a32)   of which Great Expectations", part["gx"], "s")
        report.add("imports_s", "one-off imports (untimed)", imports.seconds, "s")
        report.add("setup_s", "setup: build shards (untimed, child)", seeded["seconds"], "s")
        report.add("graph_s", "setup: export + quantize the graph (untimed, child)",
                   graph["seconds"], "s")
        report.add("peak_rss_a_bytes", "peak RSS of the int8 scoring child after (a)", rss_a, "B")
        report.add("served_peak_rss_bytes", "peak RSS of the int8 child incl. (c)", served_rss,
                   "B")
        report.add_peak_rss(label="peak RSS (this process: torch, a32, b, c32)")
        report.add("setup_peak_rss_bytes", "peak RSS of the setup child (untimed)", setup_rss,
                   "B")
        report.note("(a) and (c) run in a child process that never imports torch, as the "
                    "scoring task does; the RSS goal is its peak right after the first (a) "
                    "(imports, the graph, one shard, the commit).")
        if n_b < n:
            report.note(f"(b) was timed on the first {n_b:,} of {n:,} images (--b-sample).")
        report.note(f"the model has random weights (seed {settings.seed}); one warm-up forward "
                    "pass ran before (a). Use --repeat 3 for medians of interleaved rounds.")

        report.goal(f"a/a32 >= {GOAL_A_OVER_A32:g}", rate_a / rate_a32 >= GOAL_A_OVER_A32,
                    f"a/a32 = {rate_a / rate_a32:.2f}")
        report.goal(f"a/c >= {GOAL_A_OVER_C:g}", rate_a / rate_c >= GOAL_A_OVER_C,
                    f"a/c = {rate_a / rate_c:.2f}")
        report.goal("peak RSS < 0.6 GiB", rss_a < GOAL_RSS_BYTES,
                    f"{rss_a / _report.GIB:.2f} GiB after (a)")
        report.goal(f"a/b >= {GOAL_A_OVER_B:g}", rate_a / rate_b >= GOAL_A_OVER_B,
                    f"a/b = {rate_a / rate_b:.1f}")
        report.finish()


if __name__ == "__main__":
    main()
