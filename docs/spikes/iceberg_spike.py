"""Spike (table format decision, docs/architecture.md): pyiceberg with a SQL catalog for the
predictions table, on a local folder and on moto_server. Two processes replace the same `dt`
partition at once, 10 rounds; prints each round's outcomes and what a reader then sees.

Not part of the platform (pyiceberg is not a dependency). Run it in a scratch virtualenv:

    python3 -m venv /tmp/ice && /tmp/ice/bin/pip install "pyiceberg[sql-sqlite,pyarrow,s3fs]==0.12.0"
    /tmp/ice/bin/python docs/spikes/iceberg_spike.py local "$(mktemp -d)"
    # moto_server on a free port, a bucket named "spike" created in it, then:
    /tmp/ice/bin/python docs/spikes/iceberg_spike.py s3 "$(mktemp -d)" http://127.0.0.1:PORT
"""
import multiprocessing as mp, sys, time, datetime as dt, uuid
import pyarrow as pa

DAY = dt.date(2026, 11, 22)

def catalog(kind, root, endpoint=None):
    from pyiceberg.catalog.sql import SqlCatalog
    props = {"uri": f"sqlite:///{root}/catalog.db"}
    if kind == "local":
        props["warehouse"] = f"file://{root}/wh"
    else:
        props.update({"warehouse": "s3://spike/wh", "s3.endpoint": endpoint,
                      "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
                      "s3.region": "us-east-1"})
    return SqlCatalog("spike", **props)

SCHEMA = pa.schema([("image_id", pa.string()), ("predicted_label", pa.int32()),
                    ("dag_run_id", pa.string()), ("dt", pa.date32())])

def rows(run, n=100):
    return pa.table({"image_id": [f"img-{i}" for i in range(n)], "predicted_label": pa.array([1]*n, pa.int32()),
                     "dag_run_id": [run]*n, "dt": pa.array([DAY]*n, pa.date32())}, schema=SCHEMA)

def writer(args):
    kind, root, endpoint, run, barrier_t = args
    from pyiceberg.expressions import EqualTo
    from pyiceberg.exceptions import CommitFailedException
    t = catalog(kind, root, endpoint).load_table("ns.predictions")
    while time.time() < barrier_t: time.sleep(0.001)
    try:
        t.overwrite(rows(run), overwrite_filter=EqualTo("dt", DAY.isoformat()))
        return "committed"
    except CommitFailedException as e:
        return f"conflict"
    except Exception as e:
        return f"error {type(e).__name__}: {str(e)[:120]}"

def main(kind, root, endpoint=None):
    from pyiceberg.partitioning import PartitionSpec, PartitionField
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.schema import Schema
    from pyiceberg.io.pyarrow import pyarrow_to_schema
    cat = catalog(kind, root, endpoint)
    cat.create_namespace_if_not_exists("ns")
    t = cat.create_table("ns.predictions", schema=SCHEMA)
    with t.update_spec() as u:
        u.add_identity("dt")
    outcomes = {}
    with mp.get_context("spawn").Pool(2) as pool:
        for r in range(10):
            go = time.time() + 1.5
            res = pool.map(writer, [(kind, root, endpoint, f"run-{r}-{w}", go) for w in (0, 1)])
            for x in res: outcomes[x] = outcomes.get(x, 0) + 1
            t = cat.load_table("ns.predictions")
            tbl = t.scan().to_arrow()
            ids = tbl.column("image_id").to_pylist()
            runs = set(tbl.column("dag_run_id").to_pylist())
            print(f"round {r}: {res} rows={len(ids)} unique={len(set(ids))} runs={len(runs)} snapshots={len(t.snapshots())}", flush=True)
    print(kind, "outcomes", outcomes)
    first = t.snapshots()[1]
    old = t.scan(snapshot_id=first.snapshot_id).to_arrow()
    print("time travel to snapshot", first.snapshot_id, "rows", old.num_rows)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
