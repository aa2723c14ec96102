"""How long ``capbatch.report`` takes on a 1,000,000-row results table.

Generates a synthetic results table (seeded numpy: labels of 4-6 characters, answers
mostly right with some substitutions and case slips, failures, cache hits, unlabelled
rows, latencies, costs and timestamps), writes it to a temporary Parquet file with the
runner's result schema, then times, each ``--repeats`` times (median shown):

* ``report``: ``capbatch.report(path, by="style")`` end to end (read Parquet, score,
  aggregate overall, by style and by label length, errors, confusions);
* ``to_html``: ``Report.to_html`` (charts, tables; the gallery's images do not exist,
  so it shows placeholders: image loading is not what this measures).

Goal: ``report`` under 15 s for 1,000,000 rows. Run from the repository root:

    python bench/report.py                 # 1,000,000 rows
    python bench/report.py --rows 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import capbatch
from capbatch._io.record import RESULT_SCHEMA

ALPHABET = np.array(list("abcdefghjkmnpqrstuvwxyz23456789"))
CODES = np.array(["ERROR_CAPTCHA_UNSOLVABLE", "ERROR_SERVICE_UNAVALIABLE", "INPUT_FILE_NOT_FOUND"])


def _strings(chars: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Rows of single characters, cut to ``lengths``, as one string per row."""
    width = chars.shape[1]
    cut = np.where(np.arange(width)[None, :] < lengths[:, None], chars, "")
    return np.ascontiguousarray(cut.astype("<U1")).view(f"<U{width}").ravel()


def make_table(rows: int, seed: int = 20261129) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 7, rows)
    label_chars = ALPHABET[rng.integers(0, len(ALPHABET), (rows, 6))]
    labels = _strings(label_chars, lengths)
    answer_chars = label_chars.copy()
    wrong = rng.random(rows) < 0.12  # one substituted character
    position = (rng.random(rows) * lengths).astype(int)
    answer_chars[wrong, position[wrong]] = ALPHABET[rng.integers(0, len(ALPHABET), wrong.sum())]
    answer_lengths = lengths - (rng.random(rows) < 0.02)  # a dropped last character
    answers = _strings(answer_chars, answer_lengths)
    upper = rng.random(rows) < 0.03
    answers[upper] = np.char.upper(answers[upper])
    failed = rng.random(rows) < 0.03
    cached = ~failed & (rng.random(rows) < 0.05)
    unlabelled = rng.random(rows) < 0.01
    labels[unlabelled] = ""

    start = 1_780_000_000.0
    submitted = start + np.sort(rng.random(rows)) * rows / 200.0  # about 200 rows/s
    latency = rng.lognormal(np.log(900.0), 0.5, rows)
    finished = submitted + latency / 1000.0
    ids = pc.utf8_lpad(pa.array(np.arange(rows)).cast(pa.string()), 7, "0")
    ids = pc.binary_join_element_wise("row-", ids, "")
    styles = np.array(["plain", "noisy", "classic"])[np.arange(rows) % 3]

    def masked(values: np.ndarray, mask: np.ndarray, type: pa.DataType) -> pa.Array:
        return pa.array(values, type=type, mask=mask)

    def stamps(seconds: np.ndarray, mask: np.ndarray) -> pa.Array:
        ms = pa.array(np.round(seconds * 1000).astype("int64"), mask=mask)
        return ms.cast(pa.timestamp("ms", tz="UTC"))

    columns = {
        "id": ids,
        "image_path": pc.binary_join_element_wise("images/", ids, ".png", ""),
        "label": pa.array(labels),
        "style": pa.array(styles),
        "status": pa.array(np.where(failed, "failed", "solved")),
        "answer": masked(answers, failed, pa.string()),
        "solution": pa.nulls(rows, pa.string()),
        "error_code": masked(CODES[rng.integers(0, len(CODES), rows)], ~failed, pa.string()),
        "error_message": pa.nulls(rows, pa.string()),
        "task_id": pa.nulls(rows, pa.string()),
        "provider": pa.array(np.full(rows, "capsolver")),
        "attempts": pa.array(np.where(cached, 0, 1), type=pa.int32()),
        "polls": pa.array(np.zeros(rows), type=pa.int32()),
        "submitted_at": stamps(submitted, cached),
        "finished_at": stamps(finished, np.zeros(rows, bool)),
        "latency_ms": masked(latency, cached, pa.float64()),
        "queue_ms": pa.nulls(rows, pa.float64()),
        "cost_usd": pa.array(np.where(failed | cached, 0.0, 0.0004)),
        "from_cache": pa.array(cached),
    }
    schema = pa.schema(
        [pa.field(n, pa.string()) for n in ("id", "image_path", "label", "style")]
        + list(RESULT_SCHEMA)
    )
    return pa.table([columns[n] for n in schema.names], schema=schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    table = make_table(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.results.parquet"
        pq.write_table(table, path, compression="zstd", row_group_size=64 * 1024)
        del table
        made = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        report_s, html_s = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            rep = capbatch.report(path, by="style")
            report_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            page = rep.to_html(Path(tmp) / "bench.report.html")
            html_s.append(time.perf_counter() - t)

    s = rep.summary.iloc[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    print(f"table: {args.rows:,} rows, {size_mb:.1f} MB Parquet (generated in {made:.1f} s)")
    print(
        f"check: accuracy {s['accuracy']:.4f}, exact {s['exact_accuracy']:.4f}, "
        f"CER {s['cer']:.4f}, p50 {s['latency_p50_ms']:.0f} ms, "
        f"cost per correct ${s['cost_per_correct_usd']:.6f}, page {len(page) / 1e3:.0f} kB"
    )
    print()
    print(f"{'step':<10} {'median s':>9} {'min s':>7} {'max s':>7}   goal")
    for name, times, goal in (("report", report_s, "< 15 s"), ("to_html", html_s, "")):
        print(
            f"{name:<10} {statistics.median(times):9.2f} {min(times):7.2f} {max(times):7.2f}"
            f"   {goal}"
        )


if __name__ == "__main__":
    main()
