"""``capbatch.report`` and ``capbatch.compare`` on small hand-made tables and files."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import capbatch
from capbatch import ConfigError, TableError


def results(rows: list[tuple[Any, ...]], **extra: list[Any]) -> pd.DataFrame:
    """(id, label, answer) rows plus result columns; failed where the answer is None."""
    frame = pd.DataFrame(rows, columns=["id", "label", "answer"])
    frame["status"] = ["solved" if pd.notna(a) else "failed" for a in frame["answer"]]
    frame["error_code"] = [
        None if pd.notna(a) else "ERROR_CAPTCHA_UNSOLVABLE" for a in frame["answer"]
    ]
    frame["latency_ms"] = [100.0 * (i + 1) for i in range(len(frame))]
    frame["cost_usd"] = 0.001
    for name, values in extra.items():
        frame[name] = values
    return frame


RUN_A = results(
    [("a", "k7mq", "k7mq"), ("b", "xy2z", "XY2Z"), ("c", "pqrs", "pqr5"), ("d", "mnop", None)]
)
RUN_B = results(
    [("d", "mnop", "mnop"), ("c", "pqrs", "pqrs"), ("b", "xy2z", "xy2z"), ("a", "k7mq", "k7mg")]
)


def png(text: str) -> bytes:
    shade = sum(map(ord, text)) % 200  # a different image for each text
    image = Image.new("RGB", (40 + 8 * len(text), 20), (shade, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_report_on_a_dataframe() -> None:
    rep = capbatch.report(RUN_A)
    assert isinstance(rep, capbatch.Report)
    s = rep.metrics()
    assert (s["rows"], s["correct"], s["failed"]) == (4, 2, 1)
    assert s["accuracy"] == 0.5
    assert s["exact_accuracy"] == 0.25
    assert s["latency_p50_ms"] == 250.0  # 100, 200, 300, 400
    assert s["cost_per_correct_usd"] == pytest.approx(0.004 / 2)
    assert list(rep.groups) == ["label_length"]
    assert rep.notes == [] and not rep.partial
    assert rep.confusions.to_dict("records") == [
        {"label_char": "s", "answer_char": "5", "count": 1}
    ]
    assert rep.wrong_answers()["id"].tolist() == ["c", "d"]


def test_report_reads_parquet_and_csv_alike(tmp_path: Path) -> None:
    frame = results([("a", "0123", "0123"), ("b", "=1+2", "=1+2"), ("c", "0042", "42")])
    frame["style"] = ["plain", "noisy", "plain"]
    parquet, csv = tmp_path / "run.results.parquet", tmp_path / "run.results.csv"
    frame.to_parquet(parquet)
    # As capbatch's CSV writer does: answers a spreadsheet would run get a leading quote.
    guarded = frame.assign(answer=frame["answer"].str.replace(r"^([=+\-@])", r"'\1", regex=True))
    guarded.to_csv(csv, index=False)
    a, b = capbatch.report(parquet, by="style"), capbatch.report(csv, by=["style"])
    # A label of digits stays text ("0123" is not the number 123), the quote is undone.
    assert a.metrics()["accuracy"] == b.metrics()["accuracy"] == pytest.approx(2 / 3)
    pd.testing.assert_frame_equal(a.groups["style"], b.groups["style"])
    assert a.name == b.name == "run"


def test_unusable_input_is_a_table_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="label column 'labels' is not in the table"):
        capbatch.report(RUN_A, label="labels")
    with pytest.raises(TableError, match="did you mean 'label'"):
        capbatch.report(RUN_A, label="Label")
    with pytest.raises(TableError, match="not found"):
        capbatch.report(tmp_path / "missing.parquet")
    fifo = tmp_path / "fifo.parquet"
    os.mkfifo(fifo)  # never opened: that would wait for a writer
    with pytest.raises(TableError, match="not a regular file"):
        capbatch.report(fifo)
    with pytest.raises(TableError, match="format"):
        capbatch.report(tmp_path / "results.xlsx")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(TableError, match="cannot read"):
        capbatch.report(broken)
    with pytest.raises(TableError, match="result column 'answer' is not in the table"):
        capbatch.report(RUN_A.drop(columns=["answer"]))
    with pytest.raises(TableError, match="group column 'colour'"):
        capbatch.report(RUN_A, by="colour")


def test_a_table_without_status_counts_answers_as_solved() -> None:
    rep = capbatch.report(RUN_A.drop(columns=["status"]))
    assert rep.metrics()["solved"] == 3
    assert any("no status column" in n for n in rep.notes)


def test_a_run_that_stopped_part_way_says_so(tmp_path: Path) -> None:
    frame = results([("a", "ab", "ab"), ("b", "cd", None), ("c", "ef", None), ("d", "gh", None)])
    frame.loc[1, "error_code"] = "SPEND_CAP_REACHED"
    frame.loc[2, ["status", "error_code"]] = None  # never reached
    frame["label"] = frame["label"].astype(object)
    frame.loc[3, "label"] = None
    table = pa.Table.from_pandas(frame, preserve_index=False)
    run = {"rows": 10, "stopped_by": "ERROR_ZERO_BALANCE", "provider": "capsolver"}
    table = table.replace_schema_metadata(
        {"capbatch.run": json.dumps(run), "capbatch.provider": "capsolver"}
    )
    path = tmp_path / "partial.parquet"
    pq.write_table(table, path)
    rep = capbatch.report(path)
    assert rep.partial
    text = "\n".join(rep.notes)
    for expected in (
        "stopped part-way",
        "recorded 10 rows but the table has 4",
        "ERROR_ZERO_BALANCE",
        "1 rows not sent: the spend cap",
        "1 rows have no result",
        "1 rows have no label",
    ):
        assert expected in text
    s = rep.metrics()
    assert (s["not_run"], s["labelled"], s["unlabelled"], s["accuracy"]) == (2, 1, 1, 1.0)
    assert rep.run["provider"] == "capsolver"
    assert rep.to_dict()["partial"] is True


def test_grouped_views_and_json() -> None:
    frame = RUN_A.assign(style=["plain", "noisy", "plain", "noisy"])
    rep = capbatch.report(frame, by="style")
    assert rep.groups["style"].loc["plain", "accuracy"] == 0.5
    assert rep.grouped("id").loc["b", "accuracy"] == 1.0  # any column, on demand
    data = json.loads(rep.to_json())
    assert data["summary"]["accuracy"] == 0.5
    assert data["summary"]["accuracy_solved"] == pytest.approx(2 / 3)
    assert data["groups"]["style"][0]["style"] == "noisy"
    assert data["summary"]["throughput_rps"] is None  # no timestamps: NaN becomes null


def test_case_sensitive_report() -> None:
    rep = capbatch.report(RUN_A, case_sensitive=True)
    assert rep.metrics()["accuracy"] == 0.25
    assert rep.metrics()["ci_accuracy"] == 0.5


def test_notebook_view_is_html() -> None:
    html = capbatch.report(RUN_A)._repr_html_()
    assert html.startswith('<div class="capbatch-report">')
    assert "50.0 %" in html


def test_compare_by_id_column() -> None:
    cmp = capbatch.compare(RUN_A, RUN_B, names=["one", "two"])
    assert isinstance(cmp, capbatch.Comparison)
    assert cmp.key == "id"
    assert cmp.names == ["one", "two"]
    # Matched by id: a k7mq/k7mg, b XY2Z/xy2z (same, case-insensitively), c pqr5/pqrs,
    # d None/mnop. Only b agrees.
    assert cmp.agreement == 0.25
    assert cmp.disagreements["id"].tolist() == ["a", "c", "d"]
    assert cmp.disagreements["two"].tolist() == ["k7mg", "pqrs", "mnop"]
    assert cmp.summary.loc["one", "accuracy"] == 0.5
    assert cmp.summary.loc["two", "accuracy"] == 0.75
    # CER one: 0, 0 (case-insensitive), 1/4 (pqr5), 1 (failed); two: 1/4 (k7mg), 0, 0, 0.
    assert cmp.summary.loc["one", "cer"] == pytest.approx((0 + 0 + 1 / 4 + 1) / 4)
    assert cmp.summary.loc["two", "cer"] == pytest.approx(1 / 16)
    assert cmp.summary.loc["one", "cost_per_correct_usd"] == pytest.approx(0.004 / 2)
    assert cmp.summary.loc["two", "cost_per_correct_usd"] == pytest.approx(0.004 / 3)
    assert cmp.summary.loc["two", "latency_p50_ms"] == 250.0
    assert cmp.pairs.to_dict("records") == [
        {"run_a": "one", "run_b": "two", "rows": 4, "agree": 1, "agreement": 0.25}
    ]
    strict = capbatch.compare(RUN_A, RUN_B, case_sensitive=True)
    assert strict.agreement == 0.0
    assert strict.names == ["results", "results (2)"]


def test_compare_metrics_are_over_matched_rows_and_notes_the_rest() -> None:
    extra = pd.concat([RUN_B, results([("e", "zz", "zz")])], ignore_index=True)
    cmp = capbatch.compare(RUN_A, extra, names=["a", "b"])
    assert len(cmp.matched) == 4
    assert cmp.summary.loc["b", "rows"] == 4
    assert "b: 1 rows are not in every run: not compared" in cmp.notes
    assert cmp.groups["label_length"].loc[("b", 4), "accuracy"] == 0.75


def test_compare_matches_by_image_when_there_is_no_id(tmp_path: Path) -> None:
    images = {name: png(name) for name in ("k7mq", "xy2z", "pqrs")}
    for name, data in images.items():
        (tmp_path / f"{name}.png").write_bytes(data)
    paths = pd.DataFrame({"image_path": [f"{n}.png" for n in images], "label": list(images)})
    a = paths.assign(answer=["k7mq", "xy2z", "pqr5"], status="solved")
    b64 = pd.DataFrame(
        {
            "image_b64": [base64.b64encode(d).decode() for d in images.values()],
            "label": list(images),
        }
    )[::-1]
    b = b64.assign(answer=["pqrs", "xy2z", "k7mq"], status="solved")
    a.to_parquet(tmp_path / "local.results.parquet")
    b.to_parquet(tmp_path / "service.results.parquet")

    by_path = capbatch.compare(a, a.assign(answer="k7mq"), base_dir=tmp_path)
    assert by_path.key == "image_path"
    assert by_path.agreement == pytest.approx(1 / 3)

    by_hash = capbatch.compare(
        tmp_path / "local.results.parquet", tmp_path / "service.results.parquet"
    )
    assert by_hash.key == "image_sha256"
    assert by_hash.names == ["local", "service"]
    assert len(by_hash.matched) == 3
    assert by_hash.agreement == pytest.approx(2 / 3)
    assert by_hash.disagreements["label"].tolist() == ["pqrs"]


def test_compare_needs_two_tables_and_a_way_to_match() -> None:
    with pytest.raises(ConfigError, match="two or more"):
        capbatch.compare(RUN_A)
    with pytest.raises(ConfigError, match="2 names for 3"):
        capbatch.compare(RUN_A, RUN_B, RUN_A, names=["x", "y"])
    with pytest.raises(TableError, match="cannot match rows"):
        capbatch.compare(RUN_A.drop(columns=["id"]), RUN_B.drop(columns=["id"]))
    with pytest.raises(TableError, match="id column 'key' is not in"):
        capbatch.compare(RUN_A, RUN_B, id_column="key")


def test_compare_notes_repeated_keys() -> None:
    doubled = pd.concat([RUN_B, RUN_B.iloc[:1]], ignore_index=True)
    cmp = capbatch.compare(RUN_A, doubled, names=["a", "b"])
    assert any("b: 1 rows repeat a id value" in n for n in cmp.notes)
    assert len(cmp.matched) == 4
    data = json.loads(cmp.to_json())
    assert data["agreement"] == 0.25 and data["disagreements"] == 3
