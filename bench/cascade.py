"""The cascade (``--local-first``) on the sample data against the emulator, in one run.

Four ways to answer the 240 sample captchas, each the real ``capbatch run`` CLI in its
own process with ``--no-cache`` and a fresh emulator (oracle answers, 5 % of them wrong,
$0.0004 a task, the first-poll and deferral settings of a real service):

  provider      every row to the emulator
  local         every row to the local solver (ddddocr), free
  cascade 0.95  ``--local-first 0.95``: the local answer kept at confidence >= 0.95
  cascade 0.98  the same at 0.98

Measured per way: wall time (start to exit, imports included), rows sent to the
provider (its ``create_calls``), cost (the output's ``cost_usd`` and what the emulator
charged: they must agree), accuracy against the labels (case-insensitive, as the labels
are lowercase), and how many rows each stage answered.

    python bench/cascade.py             # ~1-2 minutes on 2 cores
    python bench/cascade.py --rows 120  # a quicker look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._emulator import API_KEY, emu_call, emulator
from bench._machine import machine_info

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
PRICE = 0.0004
EMULATOR = [
    "--solver", "oracle", "--labels", str(SAMPLE / "labels.csv"),
    "--error-rate", "0.05", "--price", str(PRICE),
    "--sync-latency", "0.15-0.3", "--deferred", "0.3", "--solve-time", "1-3",
    "--seed", "7",
]  # fmt: skip
WAYS: dict[str, list[str]] = {
    "provider": [],
    "local": ["--provider", "local"],
    "cascade 0.95": ["--local-first", "0.95"],
    "cascade 0.98": ["--local-first", "0.98"],
}


def table(rows: int, folder: Path) -> Path:
    import pandas as pd

    frame = pd.read_parquet(SAMPLE / "captchas.parquet").head(rows)
    frame["image_path"] = [str(SAMPLE / p) for p in frame["image_path"]]
    path = folder / "captchas.parquet"
    frame.to_parquet(path, index=False)
    return path


def run_way(name: str, flags: list[str], source: Path, folder: Path) -> dict[str, Any]:
    import pandas as pd

    out = folder / f"{name.replace(' ', '-')}.parquet"
    with emulator(EMULATOR, solver=None) as (url, _pid):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env["CAPSOLVER_API_KEY"] = API_KEY
        command = [sys.executable, "-m", "capbatch", "run", str(source), "-o", str(out)]
        command += ["--quiet", "--no-cache", "--rate", "100"]
        if "--provider" not in flags:
            command += ["--base-url", url]
        started = time.perf_counter()
        done = subprocess.run([*command, *flags], env=env, capture_output=True, timeout=900)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.decode()[-2000:]}")
        stats = emu_call(url, "/_stats")
    result = pd.read_parquet(out)
    right = result["answer"].fillna("").str.lower() == result["label"].str.lower()
    local = result["provider"] == "local"
    return {
        "way": name,
        "wall_s": wall,
        "sent": int(stats["create_calls"]),
        "cost": float(result["cost_usd"].sum()),
        "charged": float(stats["charged_total"]),
        "accuracy": float(right.mean()),
        "local_rows": int(local.sum()),
        "local_accuracy": float(right[local].mean()) if local.any() else None,
        "paid_accuracy": float(right[~local].mean()) if (~local).any() else None,
    }


def render(results: list[dict[str, Any]], rows: int) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f} %"

    lines = [
        f"rows: {rows} sample captchas; emulator: {' '.join(EMULATOR[2:])}",
        *machine_info(),
        "",
        "| way | wall s | sent to provider | cost $ | charged $ | accuracy | answered "
        "locally | their accuracy | paid rows' accuracy |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r['way']} | {r['wall_s']:.1f} | {r['sent']} ({r['sent'] / rows:.0%}) | "
            f"{r['cost']:.4f} | {r['charged']:.4f} | {pct(r['accuracy'])} | "
            f"{r['local_rows']} | {pct(r['local_accuracy'])} | {pct(r['paid_accuracy'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=240, help="sample rows (at most 240)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="capbatch-cascade-") as work:
        folder = Path(work)
        source = table(args.rows, folder)
        results = []
        for name, flags in WAYS.items():
            print(f"running {name} ...", file=sys.stderr)
            results.append(run_way(name, flags, source, folder))
    print(render(results, args.rows))


if __name__ == "__main__":
    main()
