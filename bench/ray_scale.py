"""How capbatch scales on Ray (issue 15): the local solver over workers, and the ceiling
of the one budget actor every worker of a cluster asks.

What, on a local Ray cluster of this machine's CPUs:

  one process      ``capbatch.run(table, provider="local")`` in this process, no Ray, with
                   1 and with 2 solver threads: the baseline.
  ray, N workers   ``capbatch.ray.solve`` with N ``SolveBatches`` actors (one ddddocr
                   model each, one CPU each), N = 1 and 2.
  budget actor     ``Budget.take_slots`` calls a second, answered by the actor with
                   ``--clients`` callers keeping ``--depth`` calls each in flight, at a
                   rate far above what it can grant (so the actor, not the rate, is the
                   limit); requests/s = calls/s x slots a call (1 and 16: the workers'
                   lease, ``leases.MAX_SLOT_LEASE``). Also the journal actor's
                   ``record_intent`` calls a second (one SQLite commit each).

Rows/s are measured two ways: "steady" from the first result batch to the last (the
workers' start-up, about 5-10 s here, is left out: it is paid once per run), and "wall"
for the whole call. The input is ``--rows`` rows cycling over the sample captchas with
``cache=False`` and an id column, so every row is one recognition.

    python bench/ray_scale.py                  # 480 rows; about 2-3 minutes on 2 CPUs
    python bench/ray_scale.py --rows 960 --skip-budget
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def sample_table(rows: int) -> pd.DataFrame:
    base = pd.read_csv(SAMPLE / "captchas.csv", dtype=str)
    frame = pd.DataFrame([base.iloc[i % len(base)] for i in range(rows)]).reset_index(drop=True)
    frame["image_path"] = [str(SAMPLE / p) for p in frame["image_path"]]
    frame["id"] = [f"row-{i:06d}" for i in range(rows)]
    return frame


def one_process(frame: pd.DataFrame, threads: int, folder: Path) -> float:
    """Rows/s of ``capbatch.run`` with the local solver in this process."""
    import capbatch
    from capbatch.local import LocalService, LocalSolver

    service = LocalService(LocalSolver(workers=threads))
    started = time.perf_counter()
    capbatch.run(
        frame,
        provider="local",
        service=service,
        cache=False,
        max_in_flight=2 * threads,
        journal=str(folder / f"one-{threads}.sqlite"),
        quiet=True,
    )
    return len(frame) / (time.perf_counter() - started)


def on_ray(ray: Any, frame: pd.DataFrame, workers: int, folder: Path) -> tuple[float, float]:
    """(steady rows/s, wall rows/s) of ``capbatch.ray.solve`` with ``workers`` actors."""
    import capbatch.ray

    pieces = [frame.iloc[i : i + 16] for i in range(0, len(frame), 16)]
    started = time.perf_counter()
    stage = capbatch.ray.solve(
        ray.data.from_pandas(pieces),
        workers=workers,
        batch_rows=16,
        provider="local",
        cache=False,
        journal=str(folder / f"ray-{workers}.sqlite"),
    )
    first_at, first_rows, rows = None, 0, 0
    for batch in stage.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += batch.num_rows
        if first_at is None:
            first_at, first_rows = time.perf_counter(), batch.num_rows
    ended = time.perf_counter()
    assert rows == len(frame), (rows, len(frame))
    assert first_at is not None
    steady = (rows - first_rows) / max(1e-9, ended - first_at)
    return steady, rows / (ended - started)


def budget_ceiling(ray: Any, lease: int, clients: int, depth: int, seconds: float) -> float:
    """``take_slots`` calls a second the budget actor answers (far above any rate)."""
    from capbatch._ray.budget import Budget

    budget = (
        ray.remote(Budget)
        .options(num_cpus=0)
        .remote(rate=1e9, max_in_flight=10, cap=None, price=0.0)
    )
    ray.get(budget.snapshot.remote())

    @ray.remote(num_cpus=0)
    def caller(handle: Any, name: str, seconds: float, depth: int, lease: int) -> int:
        import ray as inner

        done, refs = 0, []
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            while len(refs) < depth:
                refs.append(handle.take_slots.remote(name, lease))
            ready, refs = inner.wait(refs, num_returns=1)
            done += len(ready)
        inner.get(refs)
        return done

    started = time.perf_counter()
    counts = ray.get(
        [caller.remote(budget, f"w{i}", seconds, depth, lease) for i in range(clients)]
    )
    elapsed = time.perf_counter() - started
    ray.kill(budget)
    return sum(counts) / elapsed


def journal_ceiling(ray: Any, folder: Path, calls: int) -> float:
    """``record_intent`` calls a second through the journal actor (each one committed)."""
    from capbatch._ray.pipeline import open_journal

    actor, _ = open_journal(None, str(folder / "ceiling.sqlite"), None)
    started = time.perf_counter()
    refs = [
        actor.call.remote("record_intent", f"k{i}", owner=str(i), provider="x", submitted_at=0.0)
        for i in range(calls)
    ]
    ray.get(refs)
    rate = calls / (time.perf_counter() - started)
    ray.get(actor.close.remote())
    ray.kill(actor)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-budget", action="store_true")
    args = parser.parse_args()
    for line in machine_info(("capbatch", "ray", "pyarrow", "ddddocr")):
        print(line)
    frame = sample_table(args.rows)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_process(frame.head(32), 1, folder)  # the model loaded, the imports done
        for threads in (1, 2):
            rate = one_process(frame, threads, folder)
            print(f"one process, {threads} thread(s): {rate:7.1f} rows/s")
        ray.init(include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"ray cluster: {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
        for workers in (1, 2):
            steady, wall = on_ray(ray, frame, workers, folder)
            print(f"ray, {workers} worker(s): {steady:7.1f} rows/s steady, {wall:7.1f} wall")
        if not args.skip_budget:
            for lease in (1, 16):
                calls = budget_ceiling(ray, lease, args.clients, args.depth, args.seconds)
                print(
                    f"budget actor, lease {lease:2d}: {calls:8.0f} calls/s = "
                    f"{calls * lease:8.0f} requests/s"
                )
            print(f"journal actor: {journal_ceiling(ray, folder, 2000):8.0f} record_intent/s")
        ray.shutdown()


if __name__ == "__main__":
    main()
