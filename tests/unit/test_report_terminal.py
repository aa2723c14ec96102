"""What ``capbatch report`` and ``compare`` print, run in-process on small tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from capbatch._cli.report import compare, report


def write(tmp_path: Path, name: str, answers: list[str], cost: float) -> Path:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "label": ["12", "40", "[7]"],
            "answer": answers,
            "status": "solved",
            "solution": [f'{{"distance": {a}}}' for a in answers],
            "latency_ms": 50.0,
            "cost_usd": cost,
            "side": ["left", "right", "right"],
        }
    )
    path = tmp_path / name
    frame.to_parquet(path)
    return path


def test_a_free_run_prints_one_cost_line_and_typed_metrics(tmp_path: Path) -> None:
    path = write(tmp_path, "free.results.parquet", ["12", "47", "9"], 0.0)
    done = CliRunner().invoke(report, [str(path), "--by", "side"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert "cost: none recorded (a local run, or a provider that reported no cost)" in lines
    assert not any(line.startswith(("total cost", "cost per")) for line in lines)
    # errors 0, 7, 2: within 5 px, two of three; no text, so no CER.
    assert any(line.startswith("distance within tolerance") and line.endswith("66.7 %")
               for line in lines)  # fmt: skip
    assert not any(line.startswith("character error rate") for line in lines)
    head = lines[lines.index("by side:") + 1].split()
    assert "within" in head and "$/correct" not in head


def test_compare_prints_a_table_per_group_and_writes_beside_the_first(tmp_path: Path) -> None:
    a = write(tmp_path, "one.results.parquet", ["12", "47", "9"], 0.001)
    b = write(tmp_path, "two.results.parquet", ["13", "40", "7"], 0.002)
    done = CliRunner().invoke(compare, [str(a), str(b), "--by", "side", "--tolerance", "1"])
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    at = lines.index("by side:")
    rows = {" ".join(line.split()[:3]): line.split() for line in lines[at + 2 : at + 6]}
    assert set(rows) == {"one · left", "one · right", "two · left", "two · right"}
    assert rows["two · right"][3] == "2"  # rows
    assert lines[-1] == f"report: {tmp_path / 'one.compare.html'}"
    assert (tmp_path / "one.compare.html").is_file()
