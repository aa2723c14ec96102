"""``capbatch report`` and ``capbatch compare`` run as real commands in a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"


def capbatch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "capbatch", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def results(tmp_path: Path, name: str, answers: list[str | None]) -> Path:
    """A hand-made results table of four rows with the given answers."""
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "label": ["k7mq", "0042", "pqrs", "mnop"],  # "0042" must stay text in CSV
            "style": ["plain", "plain", "noisy", "noisy"],
            "answer": answers,
            "status": ["solved" if a is not None else "failed" for a in answers],
            "error_code": [None if a is not None else "ERROR_CAPTCHA_UNSOLVABLE" for a in answers],
            "latency_ms": [100.0, 200.0, 300.0, 400.0],
            "cost_usd": [0.001, 0.001, 0.001, 0.0],
        }
    )
    path = tmp_path / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_report_prints_a_summary_and_writes_the_page(tmp_path: Path) -> None:
    path = results(tmp_path, "run.results.csv", ["k7mq", "0042", "PQR5", None])
    done = capbatch("report", path, "--by", "style", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "run.report.html"
    lines = done.stdout.splitlines()
    assert lines[-1] == f"report: {page}"
    assert any(line.split()[:1] == ["accuracy"] and line.endswith("50.0 %") for line in lines)
    assert "by style:" in done.stdout
    assert "ERROR_CAPTCHA_UNSOLVABLE 1" in done.stdout
    # 0.003 USD spent on labelled rows, 2 correct answers (k7mq, 0042; PQR5 is wrong).
    assert any(line.startswith("cost per correct answer") and line.endswith("$0.0015")
               for line in lines)  # fmt: skip
    assert "<table" in page.read_text(encoding="utf-8")


def test_report_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    path = results(tmp_path, "run.parquet", ["k7mq", "0042", "pqrs", "mnop"])
    done = capbatch("report", path, "--label-column", "truth", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("capbatch: error: label column 'truth' is not in the table")
    assert len(done.stderr.strip().splitlines()) == 1


def test_compare(tmp_path: Path) -> None:
    a = results(tmp_path, "local.results.csv", ["k7mq", "0042", "PQR5", None])
    b = results(tmp_path, "service.results.parquet", ["k7mq", "0042", "pqrs", "mnop"])
    done = capbatch("compare", a, b, "--name", "x", "--name", "y", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "runs: x, y; 4 rows matched by id"
    assert any(line.split()[:1] == ["accuracy"] and line.split()[-4:] == ["50.0", "%", "100.0", "%"]
               for line in lines)  # fmt: skip
    assert "agreement x / y: 50.0 % of 4 rows" in lines
    assert "rows where the runs disagree: 2" in lines
    assert lines[-1] == "report: compare.html"
    assert (tmp_path / "compare.html").is_file()


@pytest.mark.skipif(importlib.util.find_spec("ddddocr") is None, reason="needs ddddocr")
def test_local_run_then_report(tmp_path: Path) -> None:
    if not (SAMPLE / "captchas.csv").is_file():
        pytest.skip("no sample data")
    table = pd.read_csv(SAMPLE / "captchas.csv", dtype=str).head(6)
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    table.to_csv(tmp_path / "six.csv", index=False)
    run = capbatch("run", "six.csv", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (tmp_path / "out").mkdir()
    done = capbatch(
        "report", "six.results.parquet", "--by", "style", "--json", "--case-sensitive",
        "-o", "out/page.html", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    answers = pd.read_parquet(tmp_path / "six.results.parquet")
    pairs = list(zip(answers["answer"], table["label"], strict=True))
    exact = sum(a == t for a, t in pairs)
    caseless = sum(a.casefold() == t for a, t in pairs)
    assert data["case_sensitive"] is True
    assert data["summary"]["rows"] == 6
    assert data["summary"]["accuracy"] == pytest.approx(exact / 6)
    assert data["summary"]["ci_accuracy"] == pytest.approx(caseless / 6)
    assert data["run"]["provider"] == "local"
    assert sorted(g["style"] for g in data["groups"]["style"]) == ["classic", "noisy", "plain"]
    assert data["html"] == "out/page.html"
    page = (tmp_path / "out" / "page.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 6 - exact  # wrong answers' images shown
