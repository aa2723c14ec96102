"""``capbatch report`` and ``capbatch compare`` run as real commands in a subprocess."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

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
            "image_path": ["a.png", "b.png", "c.png", "d.png"],
        }
    )
    path = tmp_path / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_report_prints_a_summary_and_writes_the_page(tmp_path: Path) -> None:
    path = results(tmp_path, "run.results.csv", ["K7MQ", "0042", "PQR5", None])
    done = capbatch("report", path, "--by", "style", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "run.report.html"
    lines = done.stdout.splitlines()
    assert lines[-1] == f"report: {page}"
    assert any(line.split()[:1] == ["accuracy"] and line.endswith("50.0 %") for line in lines)
    assert "by style:" in done.stdout
    assert "ERROR_CAPTCHA_UNSOLVABLE 1" in done.stdout
    # 0.003 USD spent on labelled rows, 2 correct answers (K7MQ, 0042; PQR5 is wrong).
    assert any(line.startswith("cost per correct answer") and line.endswith("$0.0015")
               for line in lines)  # fmt: skip
    html = page.read_text(encoding="utf-8")
    assert "<table" in html
    # Case-insensitive matching: exact accuracy beside it, not the same number twice.
    cards = cards_of(html)
    assert cards["accuracy (case-insensitive)"] == "50.0 %"  # K7MQ and 0042
    assert cards["exact accuracy (case-sensitive)"] == "25.0 %"  # 0042 only
    assert "case-insensitive accuracy" not in cards


def cards_of(page: str) -> dict[str, str]:
    """The headline and cost cards of a page: name -> value."""
    found = re.findall(
        r'<div class="card"><div class="value">([^<]*)</div><div class="name">([^<]*)</div>', page
    )
    return {name: value for value, name in found}


def test_report_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    path = results(tmp_path, "run.parquet", ["k7mq", "0042", "pqrs", "mnop"])
    done = capbatch("report", path, "--label-column", "truth", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("capbatch: error: label column 'truth' is not in the table")
    assert len(done.stderr.strip().splitlines()) == 1


def test_compare(tmp_path: Path) -> None:
    a = results(tmp_path, "local.results.csv", ["k7mq", "0042", "PQR5", None])
    b = results(tmp_path, "service.results.parquet", ["k7mq", "0042", "pqrs", "mnop"])
    for name, shade in zip("abcd", (10, 60, 110, 160), strict=True):
        Image.new("RGB", (60, 20), (shade, 200, 200)).save(tmp_path / f"{name}.png")
    done = capbatch("compare", a, b, "--name", "x", "--name", "y", "--by", "style", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "runs: x, y; 4 rows matched by id"
    assert any(line.split()[:1] == ["accuracy"] and line.split()[-4:] == ["50.0", "%", "100.0", "%"]
               for line in lines)  # fmt: skip
    assert "agreement x / y: 50.0 % of 4 rows" in lines
    assert "rows where the runs disagree: 2" in lines
    # --by prints a table per group, runs side by side, as report does.
    at = lines.index("by style:")
    assert lines[at + 1].split()[:4] == ["run", "·", "style", "rows"]
    grid = {" ".join(line.split()[:3]): line.split() for line in lines[at + 2 : at + 6]}
    assert grid["x · noisy"][3:6] == ["2", "50.0", "%"]  # solved rate: one of two failed
    assert grid["y · noisy"][6:8] == ["100.0", "%"]  # accuracy
    # The page goes beside the first results file, as report's does.
    page = tmp_path / "local.compare.html"
    assert lines[-1] == f"report: {page}"
    html = page.read_text(encoding="utf-8")
    # The disagreeing rows c and d show their image beside the runs' answers.
    table = html[html.index("Rows where the runs disagree") :]
    for name in ("c", "d"):
        pixels = Image.open(tmp_path / f"{name}.png").tobytes()
        assert any(decoded(uri).tobytes() == pixels for uri in data_uris(table)), name
    assert not any(
        decoded(uri).tobytes() == Image.open(tmp_path / "a.png").tobytes()
        for uri in data_uris(table)
    )  # row a: the runs agree


def data_uris(html: str) -> list[str]:
    return re.findall(r'src="data:image/png;base64,([^"]+)"', html)


def decoded(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")


def test_report_without_labels(tmp_path: Path) -> None:
    """A production run with no label column: speed, cost and failures, and a gallery of
    the failed rows; accuracy sections say they need labels (issue 14, item 4)."""
    path = results(tmp_path, "prod.results.parquet", ["k7mq", None, "pqrs", None])
    pd.read_parquet(path).drop(columns=["label"]).to_parquet(path)
    for name, shade in zip("abcd", (10, 60, 110, 160), strict=True):
        Image.new("RGB", (60, 20), (shade, 200, 200)).save(tmp_path / f"{name}.png")
    done = capbatch("report", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "note: no label column: accuracy needs labels (name one with --label-column)" in lines
    assert any(line.split()[:2] == ["solved", "rate"] and line.endswith("50.0 %") for line in lines)
    assert any(line.split()[:1] == ["failed"] and line.endswith(" 2") for line in lines)
    assert "failures by code: ERROR_CAPTCHA_UNSOLVABLE 2" in lines
    assert not any(line.startswith(("accuracy", "character error")) for line in lines)
    html = (tmp_path / "prod.report.html").read_text(encoding="utf-8")
    assert "Accuracy needs labels" in html
    assert "<h2>Failed rows</h2>" in html
    gallery = html[html.index("<h2>Failed rows</h2>") :]
    shown = [decoded(uri).tobytes() for uri in data_uris(gallery)]
    for name, failed in zip("abcd", (False, True, False, True), strict=True):
        assert (Image.open(tmp_path / f"{name}.png").tobytes() in shown) is failed, name
    # An explicitly named label column that is missing is still a usage error.
    wrong = capbatch("report", path, "--label-column", "truth", cwd=tmp_path)
    assert wrong.returncode == 2


def test_report_on_typed_answers(tmp_path: Path) -> None:
    """Object sets and slider distances against labels written as JSON and comma lists,
    with the tolerance chosen on the command line (issue 13, item 4)."""
    frame = pd.DataFrame(
        {
            "id": ["g1", "g2", "g3", "g4", "g5", "s1", "s2", "s3"],
            "label": ["[1,4,7]", "2,5", "[0]", "8", "6", "120", "80", "[40]"],
            "answer": ["1,4,7", "2", None, "8", "6", "124", "89", "40"],
            "solution": [
                '{"objects": [1, 4, 7]}', '{"objects": [2]}', None, '{"objects": [8]}',
                '{"objects": [6]}',
                '{"distance": 124}', '{"distance": 89}', '{"distance": 40}',
            ],
            "status": ["solved", "solved", "failed"] + ["solved"] * 5,
            "error_code": [None, None, "ERROR_CAPTCHA_UNSOLVABLE"] + [None] * 5,
            "latency_ms": [100.0] * 8,
            # a failed row (no solution) takes the table's most common kind: objects
            "image_path": ["grid.png"] * 5 + ["slide.png"] * 3,
        }
    )  # fmt: skip
    frame.to_parquet(tmp_path / "typed.results.parquet")
    Image.new("RGB", (90, 90), (240, 240, 240)).save(tmp_path / "grid.png")
    Image.new("RGB", (200, 60), (240, 240, 240)).save(tmp_path / "slide.png")
    args = ("report", "typed.results.parquet", "--json")
    data = json.loads(capbatch(*args, "--tolerance", "7", cwd=tmp_path).stdout)
    s = data["summary"]
    assert data["kinds"] == ["objects", "distance"]
    assert data["scoring"] == {"tolerance": 7.0, "iou_threshold": 0.5}
    # Sets: tp 3 + 1 + 1 + 1 = 6, fp 0, fn 1 (tile 5) + 1 (the failed row's tile 0):
    # P = 1, R = 6/8, F1 = 12/14; three of five rows exact.
    assert s["set_exact_rate"] == pytest.approx(3 / 5)
    assert (s["set_precision"], s["set_recall"]) == (1.0, pytest.approx(6 / 8))
    assert s["set_f1"] == pytest.approx(12 / 14)
    # Distances: errors 4, 9 and 0; 4 is within 7 px (not within the default 5).
    assert s["distance_hit_rate"] == pytest.approx(2 / 3)
    assert s["distance_error_mean"] == pytest.approx(13 / 3)
    assert s["accuracy"] == pytest.approx(5 / 8)
    html = (tmp_path / "typed.report.html").read_text(encoding="utf-8")
    assert "Object sets (tiles)" in html and "Distances (slider offsets)" in html
    assert "at most 7 px (--tolerance)" in html
    # The wrong grid answer is drawn on its image (30 px tiles): tile 2 (row 0, column 2)
    # chosen and right, outlined in green; tile 5 (row 1, column 2) missed, in blue.
    gallery = html[html.index("<h2>Wrong answers</h2>") :]
    drawn = [decoded(uri) for uri in data_uris(gallery)]
    assert any(
        image.getpixel((62, 15)) == (26, 152, 80) and image.getpixel((62, 45)) == (69, 117, 180)
        for image in drawn
    )
    # The slider's answer 89 is a red line at x = 89, its label a green one at x = 80.
    assert any(
        image.size == (200, 60)
        and image.getpixel((89, 30)) == (215, 48, 39)
        and image.getpixel((80, 30)) == (26, 152, 80)
        for image in drawn
    )
    bad = capbatch("report", "typed.results.parquet", "--tolerance", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "--tolerance" in bad.stderr


@pytest.mark.skipif(importlib.util.find_spec("ddddocr") is None, reason="needs ddddocr")
def test_local_run_then_report(tmp_path: Path) -> None:
    if not (SAMPLE / "captchas.csv").is_file():
        pytest.skip("no sample data")
    table = pd.read_csv(SAMPLE / "captchas.csv", dtype=str).head(6)
    shutil.copytree(SAMPLE / "images", tmp_path / "images")
    table.to_csv(tmp_path / "six.csv", index=False)
    run = capbatch("run", "six.csv", "-o", "six.results.parquet", "-q", cwd=tmp_path)
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
    cards = cards_of(page)  # the local solver costs nothing: no cards of zeros
    assert not any(name.startswith("cost") for name in cards)
    solved = int(answers["status"].eq("solved").sum())
    assert cards["rows solved (no cost recorded)"] == f"{solved} of 6"
    assert "case-insensitive accuracy" in cards and "exact accuracy (case-sensitive)" not in cards


def cascade_tables(tmp_path: Path) -> tuple[Path, Path]:
    """The six rows of tests/unit/test_cascade_curve.py (where the curve is worked out
    by hand): a local run (Parquet) and a provider's run (CSV, in another order)."""
    ids = ["r1", "r2", "r3", "r4", "r5", "r6"]
    labels = ["abc", "def", "ghi", "jkl", "mno", "pqr"]
    local = pd.DataFrame(
        {
            "id": ids,
            "label": labels,
            "answer": ["ABC", "dxf", "ghi", "jkl", "mnx", None],
            "status": ["solved"] * 5 + ["failed"],
            "provider": "local",
            "cost_usd": 0.0,
            "confidence": [0.991, 0.97, 0.95, 0.9, 0.8, None],
        }
    )
    paid = pd.DataFrame(
        {
            "id": ids,
            "label": labels,
            "answer": ["abc", "def", "ghi", "jkx", "mno", "pqr"],
            "status": "solved",
            "provider": "capsolver",
            "cost_usd": [0.001, 0.001, 0.002, 0.001, 0.001, 0.002],
        }
    ).iloc[::-1]
    local.to_parquet(tmp_path / "local.parquet", index=False)
    paid.to_csv(tmp_path / "paid.csv", index=False)
    return tmp_path / "local.parquet", tmp_path / "paid.csv"


def test_compare_picks_the_cascade_threshold(tmp_path: Path) -> None:
    local, paid = cascade_tables(tmp_path)
    args = ["compare", local, paid, "--label-column", "label"]
    done = capbatch(*args, "--within", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "6 matched labelled rows" in out
    # By hand: 0.9 keeps r1-r4 locally, 5 of 6 right, $0.003 for r5 and r6 over 6 rows.
    assert "recommended: --local-first 0.9: accuracy 83.3 % (+0.0 pts against 83.3 %)" in out
    assert "$0.50 per 1,000 rows instead of $1.33 (62.5 % less)" in out
    rows = {line.split()[0]: line for line in out.splitlines() if "(" in line and "%" in line}
    nine = r"4 \(66\.7 %\)\s+2 \(33\.3 %\)\s+83\.3 %\s+\+0\.0 pts\s+\$0\.50$"
    assert re.search(nine, rows["0.9"])
    assert re.search(r"3 \(50\.0 %\)\s+3 \(50\.0 %\)\s+66\.7 %\s+-16\.7 pts", rows["0.95"])
    assert "provider alone" in out
    page = (tmp_path / "local.compare.html").read_text(encoding="utf-8")
    assert "Cascade: the local solver first" in page
    assert 'alt="accuracy against cost per 1,000 rows, one point per threshold"' in page
    # A looser tolerance moves the recommendation to keeping every local answer.
    loose = capbatch(*args, "--within", "20", "--json", cwd=tmp_path)
    assert loose.returncode == 0, loose.stderr
    data = json.loads(loose.stdout)["cascade"]
    assert data["recommended"]["threshold"] == 0.0
    assert data["recommended"]["cost_per_1000_usd"] == pytest.approx(1000 * 0.002 / 6)
    assert data["provider_accuracy"] == pytest.approx(5 / 6)
    bad = capbatch(*args, "--within", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "--within" in bad.stderr


def test_report_shows_the_confidence_gate(tmp_path: Path) -> None:
    local, _ = cascade_tables(tmp_path)
    done = capbatch("report", local, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "confidence gate (answer kept where confidence ≥ threshold; 6 labelled rows):" in out
    # By hand: at 0.95, r1-r3 are answered locally (2 of 3 right), 3 rows left.
    assert re.search(r"\n0\.95\s+3 \(50\.0 %\)\s+66\.7 %\s+3\n", out), out
    assert re.search(r"\n0 \(every local answer\)\s+5 \(83\.3 %\)\s+60\.0 %\s+1\n", out), out
    page = (tmp_path / "local.report.html").read_text(encoding="utf-8")
    assert "<h2>Confidence gate</h2>" in page
