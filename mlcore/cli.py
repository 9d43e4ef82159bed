"""``mlcore <noun> <verb>``: the command line for people running the platform.

Human-readable output by default, ``--json`` for machines, non-zero exit codes on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from datetime import UTC, date, datetime, timedelta

from rich.console import Console

from mlcore.settings import Settings
from mlcore.usage import (
    EXIT_USAGE,
    Parser,
    UsageError,
    batch_id_arg,
    day_arg,
    fail,
    one_line,
    reason_arg,
    time_arg,
    version_arg,
)


def cmd_demo(args: argparse.Namespace) -> int:
    from mlcore.demo import demo_settings, print_summary, run_pipeline, summary_json
    from mlcore.task import deployed_tasks

    console = Console(stderr=args.json)
    day = args.date or date.today() - timedelta(days=1)
    # Every deployed task, the default first, each through its own DAGs; or only --task.
    names = [args.task] if args.task else [t.name for t in deployed_tasks(Settings())]
    summaries = {}
    for name in names:
        console.rule(f"[bold]task {name}")
        summaries[name] = run_pipeline(demo_settings(args.profile, name), day, console,
                                       per_batch=args.per_batch)
        if not args.json:
            print_summary(summaries[name], console)
    if args.json:
        print(summary_json(summaries[names[0]] if args.task else summaries))
    return 0


def cmd_batch_seed(args: argparse.Namespace) -> int:
    from mlcore.seed import seed_landing
    from mlcore.storage import open_lake

    settings = _task_settings(args)
    batches = seed_landing(settings, open_lake(settings), per_batch=args.per_batch)
    for b in batches:
        print(f"{b.batch_id}\t{b.files} files\t{'labeled' if b.labeled else 'unlabeled'}")
    return 0


def cmd_batch_upload(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from mlcore.upload import batch_files, upload_batch

    files = batch_files(Path(args.dir), Path(args.labels) if args.labels else None)
    settings, lake = _lake_settings(args)
    total = sum(p.stat().st_size for p in files.values())
    err = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err, disable=args.json or not err.is_terminal,
                  transient=True) as bar:
        task = bar.add_task(f"upload {args.batch_id}", total=total)

        def done(result) -> None:
            bar.advance(task, result.size)
            if args.verbose:
                print(f"{'sent' if result.sent else 'kept'} {result.name} {result.size} bytes "
                      f"sha256 {result.sha256}", flush=True)

        result = upload_batch(lake, args.batch_id, files, workers=args.workers, on_file=done)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), indent=2))
    else:
        print(f"batch {result.batch_id}: {result.files} files verified ({result.sent} sent, "
              f"{result.kept} already there), {result.ready_key} written")
        print(f"Follow it with: mlcore batch status {result.batch_id}")
    return 0


def cmd_batch_status(args: argparse.Namespace) -> int:
    from mlcore.upload import batch_status, render_status

    settings, lake = _lake_settings(args)
    status = batch_status(settings, lake, args.batch_id)
    print(status.to_json() if args.json else render_status(status))
    return 1 if status.state == "not_found" else 0


def _task_settings(args: argparse.Namespace) -> Settings:
    """The settings of the task ``--task`` names (default: the deployment's default task)."""
    from mlcore.task import UnknownTask

    settings = Settings()
    try:
        return settings.for_task(args.task) if getattr(args, "task", None) else settings
    except UnknownTask as exc:
        raise UsageError(str(exc)) from None


def _lake_settings(args: argparse.Namespace):
    from mlcore.storage import open_lake

    settings = _task_settings(args)
    return settings, open_lake(settings)


def _print_result(args: argparse.Namespace, result: dict, summary: str) -> int:
    """``result`` as JSON with ``--json``, else the one-line ``summary`` people read."""
    print(json.dumps(result, indent=2) if args.json else summary)
    return 0


def _now() -> datetime:
    # A person acting from the CLI: the wall clock is the true time of the action.
    return datetime.now(UTC)


def cmd_model_list(args: argparse.Namespace) -> int:
    from mlcore.registry import list_versions

    rows = list_versions(*_lake_settings(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'version':>7}  {'holdout acc':>11}  {'gate':9} {'aliases':20} run")
    for r in rows:
        print(f"{r['version']:>7}  {r['holdout_accuracy']:>11.4f}  {r['gate_decision'] or '-':9} "
              f"{','.join(r['aliases']) or '-':20} {r['run_id']}")
    return 0


def cmd_model_promote(args: argparse.Namespace) -> int:
    from mlcore.promotion import promote

    if args.force and not args.reason:
        fail("a forced promotion skips the gate, so it needs --reason 'why' "
             "(recorded in the audit trail)")
    settings, lake = _lake_settings(args)
    with _known_version(settings, args.version):
        decision = promote(settings, lake, args.version, actor=args.actor, at=_now(),
                           force=args.force, reason=args.reason or "")
    print(f"version {args.version} is now champion")
    for reason in decision.reasons:
        print(f"  - {reason}")
    return 0


def cmd_model_show(args: argparse.Namespace) -> int:
    from mlcore.model_card import read_card

    print(read_card(*_lake_settings(args), args.version), end="")
    return 0


@contextlib.contextmanager
def _known_version(settings: Settings, version: str):
    """MLflow's "RESOURCE_DOES_NOT_EXIST" for a version number, said the way a person asks."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        fail(f"{settings.model_name} has no version {version} "
             "(`mlcore model list` shows the versions)")


def cmd_model_rollback(args: argparse.Namespace) -> int:
    from mlcore.promotion import rollback

    settings, lake = _lake_settings(args)
    version = rollback(settings, lake, actor=args.actor, at=_now(), reason=args.reason)
    print(f"champion rolled back to version {version}")
    return 0


def cmd_quarantine_reprocess(args: argparse.Namespace) -> int:
    from mlcore.ingest import reprocess

    _, lake = _lake_settings(args)
    archive = reprocess(lake, args.batch_id, actor=args.actor, at=_now(), reason=args.reason)
    print(f"batch {args.batch_id} released for re-ingestion (previous ledger: {archive}).")
    print(f"Run: airflow dags trigger ingest_landing --conf '{{\"batch_id\": \"{args.batch_id}\"}}'")
    return 0


def cmd_ingest_repair(args: argparse.Namespace) -> int:
    from mlcore.claims import open_claims
    from mlcore.repair import repair_curated

    settings, lake = _lake_settings(args)
    done = repair_curated(lake, open_claims(settings))
    return _print_result(args, done, f"{done['batches']} ingested batches: {done['claimed']} "
                         f"image ids claimed, {done['duplicates_removed']} duplicates removed "
                         "from curated")


def cmd_ingest_rebuild_index(args: argparse.Namespace) -> int:
    from mlcore.history_index import rebuild

    settings, lake = _lake_settings(args)
    done = rebuild(settings, lake)
    return _print_result(args, done, f"label index: {done['labeled_images']} labeled images; "
                         f"realized accuracy: {len(done['realized'])} model versions; batches "
                         f"due for ingestion: {len(done['batches_due'])}; Data Docs index: "
                         f"{done['data_docs_validations']} validations")


def cmd_trace(args: argparse.Namespace) -> int:
    from mlcore.trace import BrokenLink, render, resolve, trace

    settings, lake = _lake_settings(args)
    try:
        chain = trace(settings, lake, resolve(lake, _trace_ref(args.ref, args.row), args.row))
    except BrokenLink as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(chain, indent=2) if args.json else render(chain))
    return 0


TRACE_FORMS = ("an image id (the sha256 of its bytes, 64 hex characters), a landing key "
               "(landing/<batch_id>/<file>), a local image file, or a partition date "
               "YYYY-MM-DD with --row N")


def _trace_ref(ref: str, row: int | None) -> str:
    """The reference in one of the forms ``trace.resolve`` takes, or a :class:`UsageError`."""
    import hashlib
    import re
    from pathlib import Path

    from mlcore.layout import PARTITION, PREDICTIONS, is_landing_key
    from mlcore.storage import UnsafeKey, check_key

    text = ref.strip()
    day = re.fullmatch(rf"(?:{re.escape(PREDICTIONS)}/)?(?:{PARTITION}=)?(\d{{4}}-\d{{2}}-\d{{2}})/?",
                       text)
    if row is not None and not day:
        fail(f"--row picks a row of a partition, so the reference must be a date YYYY-MM-DD; "
             f"got {ref!r}")
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return text.lower()
    if day:
        try:
            date.fromisoformat(day.group(1))
        except ValueError:
            fail(f"{day.group(1)!r} is not a calendar date (expected YYYY-MM-DD)")
        if row is None:
            fail(f"a partition date needs --row N to pick the image (row 0 is the first); "
                 f"e.g. mlcore trace {day.group(1)} --row 0")
        if row < 0:
            fail(f"--row counts from 0, got {row}")
        return day.group(1)
    if is_landing_key(text):
        try:
            return check_key(text)
        except UnsafeKey:
            fail(f"{ref!r} is not a landing key: expected landing/<batch_id>/<file>")
    if text and Path(text).is_file():
        return hashlib.sha256(Path(text).read_bytes()).hexdigest()
    fail(f"expected {TRACE_FORMS}; got {ref!r}")


def cmd_model_reproduce(args: argparse.Namespace) -> int:
    from mlcore.reproduce import reproduce

    settings, lake = _lake_settings(args)
    with _known_version(settings, args.version):
        report = reproduce(settings, lake, args.version)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"version {report['version']} (run {report['run_id']}) retrained from its lineage:")
        for name, m in report["metrics"].items():
            print(f"  {name:22} registered {m['registered']:.6f}  reproduced {m['reproduced']:.6f}"
                  f"  diff {m['diff']:+.6f}")
        print("identical metrics" if report["identical"] else "metrics differ")
    return 0 if report["identical"] else 3


def cmd_audit_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mlcore.audit import entries

    if args.since and args.until and args.since >= args.until:
        fail(f"--since ({args.since.isoformat()}) must be before --until "
             f"({args.until.isoformat()})")
    _, lake = _lake_settings(args)
    found = entries(lake, args.action, since=args.since, until=args.until)
    if args.json:
        print(json.dumps([asdict(e) for e in found], indent=2))
    for e in [] if args.json else found:
        print(f"{e.at}  {e.action:15} {e.target:28} by {e.actor}: {e.reason}")
    return 0


def _as_of(text: str | None) -> int | datetime | None:
    """``--as-of``: a table version (an integer) or an ISO time (UTC when no offset is given)."""
    if not text:
        return None
    if text.isdigit():
        return int(text)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_predictions_read(args: argparse.Namespace) -> int:
    from mlcore.predictions import read_partition
    from mlcore.storage import open_lake

    table = read_partition(open_lake(_task_settings(args)), date.fromisoformat(args.date),
                           as_of=_as_of(args.as_of))
    frame = table.drop_columns(["probabilities"]).to_pandas()
    if args.json:
        print(frame.to_json(orient="records", date_format="iso"))
    else:
        print(frame.head(args.limit).to_string())
        print(f"{table.num_rows} rows")
    return 0


def cmd_predictions_history(args: argparse.Namespace) -> int:
    from mlcore.predictions import history
    from mlcore.storage import open_lake

    commits = history(open_lake(_task_settings(args)))[: args.limit]
    if args.json:
        print(json.dumps(commits, indent=2, default=str))
        return 0
    for c in commits:
        at = datetime.fromtimestamp(c["timestamp"] / 1000, UTC).isoformat(timespec="seconds")
        model = c.get("model") or {}
        print(f"v{c['version']:<5} {at}  {c['operation'] or '-':8} {c.get('partition', '-'):14} "
              f"{c.get('rows', '-')!s:>7} rows  model v{model.get('version', '-')}  "
              f"run {c.get('dag_run_id', '-')}")
    return 0


def cmd_predictions_vacuum(args: argparse.Namespace) -> int:
    from mlcore.predictions import PREDICTIONS, SHADOW, vacuum
    from mlcore.storage import open_lake

    settings = _task_settings(args)
    hours = (settings.predictions_retention_hours if args.retention_hours is None
             else args.retention_hours)
    lake = open_lake(settings)
    for table in (PREDICTIONS, SHADOW):
        print(f"{table}: {len(vacuum(lake, table=table, retention_hours=hours))} files deleted")
    return 0


def cmd_predictions_migrate(args: argparse.Namespace) -> int:
    from mlcore.predictions import PREDICTIONS, SHADOW, migrate_manifests
    from mlcore.storage import open_lake

    lake = open_lake(_task_settings(args))
    for table in (PREDICTIONS, SHADOW):
        for c in migrate_manifests(lake, table=table):
            print(f"{c.partition}: {c.rows} rows committed as version {c.version}")
    print("done: no manifest partitions left")
    return 0


def cmd_airflow_env(args: argparse.Namespace) -> int:
    """Print the Airflow/mlcore environment as shell exports (for scripts/up.sh)."""
    import shlex

    from mlcore.airflow_local import airflow_env, ensure_db

    env = airflow_env(Settings())
    ensure_db(env)
    for key, value in sorted(env.items()):
        if key.startswith(("AIRFLOW", "MLCORE_", "GX_", "MLFLOW_", "AWS_")) or key == "PATH":
            print(f"export {key}={shlex.quote(value)}")
    return 0


def _audited_action(parser: argparse.ArgumentParser) -> None:
    """An action the audit trail records needs a reason and names who did it."""
    parser.add_argument("--reason", type=reason_arg, required=True,
                        help="why; recorded in the audit trail")
    parser.add_argument("--actor", default=getpass.getuser())


def build_parser() -> argparse.ArgumentParser:
    from mlcore.audit import ACTIONS

    parser = Parser(prog="mlcore", description=__doc__)
    nouns = parser.add_subparsers(dest="noun", required=True)

    demo = nouns.add_parser("demo", help="seed landing and run ingest -> retrain -> score")
    demo.add_argument("--profile", choices=["demo", "test", "full"], default="demo",
                      help="training profile (demo: 12k images, 2 epochs; full: all, defaults)")
    demo.add_argument("--date", type=day_arg,
                      help="the simulated day (YYYY-MM-DD); default yesterday")
    demo.add_argument("--per-batch", type=int, default=24, help="images per seeded batch")
    demo.add_argument("--task", help="run only this task (a name in tasks/; default: every "
                                     "deployed task), seeded from its spec's sample_data")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    batch = nouns.add_parser("batch", help="landing batches").add_subparsers(dest="verb", required=True)
    seed = batch.add_parser("seed", help="write the demo batches into landing/")
    seed.add_argument("--per-batch", type=int, default=24)
    seed.set_defaults(func=cmd_batch_seed)
    up = batch.add_parser("upload", help="upload a folder as a batch: verified, _READY last, "
                          "resumable")
    up.add_argument("dir", help="folder with the image files (sub-folders are kept)")
    up.add_argument("--batch-id", required=True, type=batch_id_arg,
                    help="a new, unique id: letters, digits, '-', '_', '.'")
    up.add_argument("--labels", help="CSV file (filename,label) sent as labels.csv")
    up.add_argument("--workers", type=int, default=8, help="parallel uploads (default 8)")
    up.add_argument("--verbose", action="store_true", help="one line per verified file")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=cmd_batch_upload)
    st = batch.add_parser("status", help="not ready / ready / ingested / rejected / conflict, "
                          "with counts, quarantined files and Data Docs links")
    st.add_argument("batch_id", type=batch_id_arg)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_batch_status)

    model = nouns.add_parser("model", help="registered models").add_subparsers(dest="verb", required=True)
    mlist = model.add_parser("list", help="versions with metrics and aliases")
    mlist.add_argument("--json", action="store_true")
    mlist.set_defaults(func=cmd_model_list)
    prom = model.add_parser("promote", help="make a version champion (through the gate)")
    prom.add_argument("version", type=version_arg)
    prom.add_argument("--force", action="store_true", help="skip the gate (needs --reason)")
    prom.add_argument("--reason", type=reason_arg, default=None,
                      help="why; recorded in the audit trail")
    prom.add_argument("--actor", default=getpass.getuser(), help="who (default: you)")
    prom.set_defaults(func=cmd_model_promote)
    show = model.add_parser("show", help="print a version's model card (Markdown)")
    show.add_argument("version")
    show.set_defaults(func=cmd_model_show)
    roll = model.add_parser("rollback", help="move champion back to the previous one")
    _audited_action(roll)
    roll.set_defaults(func=cmd_model_rollback)

    quar = nouns.add_parser("quarantine", help="quarantined batches").add_subparsers(
        dest="verb", required=True)
    rep = quar.add_parser("reprocess", help="release a rejected batch for re-validation")
    rep.add_argument("batch_id", type=batch_id_arg)
    _audited_action(rep)
    rep.set_defaults(func=cmd_quarantine_reprocess)

    ing = nouns.add_parser("ingest", help="curated data and ingestion state").add_subparsers(
        dest="verb", required=True)
    repair = ing.add_parser("repair", help="claim image ids and drop the duplicates "
                            "of a lake curated before claims existed (once, after upgrading)")
    repair.add_argument("--json", action="store_true")
    repair.set_defaults(func=cmd_ingest_repair)
    rebuild = ing.add_parser("rebuild-index", help="rebuild the label index, the realized-accuracy "
                             "state and the Data Docs index from the lake and re-verify every landing batch (also built "
                             "automatically when missing)")
    rebuild.add_argument("--json", action="store_true")
    rebuild.set_defaults(func=cmd_ingest_rebuild_index)

    tr = nouns.add_parser("trace", help="follow an image from upload to its predictions and model")
    tr.add_argument("ref", help="image id (sha256), landing key, local image file, or "
                    "partition date YYYY-MM-DD with --row")
    tr.add_argument("--row", type=int, help="row index, with a partition date")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)

    repro = model.add_parser("reproduce", help="retrain a version from its recorded lineage")
    repro.add_argument("version", type=version_arg)
    repro.add_argument("--json", action="store_true")
    repro.set_defaults(func=cmd_model_reproduce)

    aud = nouns.add_parser("audit", help="the audit trail").add_subparsers(dest="verb", required=True)
    alist = aud.add_parser("list", help="promotions, rollbacks, reprocessing, manual triggers")
    alist.add_argument("--action", choices=ACTIONS, help="only this action")
    alist.add_argument("--since", type=time_arg, help="ISO date or time (UTC), inclusive")
    alist.add_argument("--until", type=time_arg, help="ISO date or time (UTC), exclusive")
    alist.add_argument("--json", action="store_true")
    alist.set_defaults(func=cmd_audit_list)

    aenv = nouns.add_parser("airflow-env", help="shell exports for running Airflow over var/")
    aenv.set_defaults(func=cmd_airflow_env)

    preds = nouns.add_parser("predictions", help="the predictions table").add_subparsers(
        dest="verb", required=True)
    read = preds.add_parser("read", help="read a committed partition (now, or --as-of)")
    read.add_argument("--date", required=True, help="the partition, YYYY-MM-DD")
    read.add_argument("--as-of", help="as committed at this ISO time (UTC unless an offset is "
                                      "given) or table version: time travel")
    read.add_argument("--limit", type=int, default=10)
    read.add_argument("--json", action="store_true")
    read.set_defaults(func=cmd_predictions_read)
    hist = preds.add_parser("history", help="the table's commits, newest first")
    hist.add_argument("--limit", type=int, default=20)
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(func=cmd_predictions_history)
    vac = preds.add_parser("vacuum", help="delete files no snapshot inside the retention needs")
    vac.add_argument("--retention-hours", type=float,
                     help="default: MLCORE_PREDICTIONS_RETENTION_HOURS")
    vac.set_defaults(func=cmd_predictions_vacuum)
    mig = preds.add_parser("migrate", help="convert manifest partitions (before Delta) once")
    mig.set_defaults(func=cmd_predictions_migrate)
    _add_task_option(parser, skip={"demo", "airflow-env"})
    return parser


def _add_task_option(parser: argparse.ArgumentParser, skip: set[str]) -> None:
    """``--task NAME`` on every command that works on one task's lake, models or data."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            if name in skip:
                continue
            if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                _add_task_option(sub, skip=set())
            else:
                sub.add_argument("--task", default=None, metavar="NAME",
                                 help="the deployed task (a spec in MLCORE_TASKS_DIR); "
                                      "default: MLCORE_TASK")


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep output clean
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a CLI reports, it does not dump tracebacks on users
        # Our own exceptions already say what happened and what to do; others get their type.
        own = type(exc).__module__.startswith("mlcore.")
        print(f"error: {'' if own else type(exc).__name__ + ': '}{one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
