"""``capbatch run`` end to end: the real CLI against the real emulator on loopback."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from capbatch._run.batches import SYSTEMATIC_RUN
from capbatch.emulator import EmulatorHandle
from tests.e2e.relay import relay
from tests.e2e.runner_helpers import (
    KEY,
    PRICE,
    assert_key_absent,
    oracle,
    run_args,
    run_cli,
    sample_frame,
    start_cli,
    write_table,
)

Start = Callable[..., EmulatorHandle]


def assert_all_solved_right(result: pd.DataFrame) -> None:
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
    assert (result["answer"] == result["label"]).all()


def test_synchronous_answers_fill_every_row_in_order(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(30), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out, "--rate", "200"))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert list(result["id"]) == [f"row-{i:05d}" for i in range(30)]
    assert_all_solved_right(result)
    assert (result["attempts"] == 1).all() and (result["polls"] == 0).all()
    assert result["cost_usd"].sum() == pytest.approx(30 * PRICE)
    assert result["latency_ms"].notna().all() and (result["provider"] == "capsolver").all()
    assert all(
        json.loads(s) == {"text": a}
        for s, a in zip(result["solution"], result["answer"], strict=True)
    )
    stats = server.stats()
    assert stats["create_calls"] == 30 and stats["charged_total"] == pytest.approx(30 * PRICE)
    meta = pq.read_metadata(out).metadata
    assert meta[b"capbatch.provider"] == b"capsolver"
    run_info = json.loads(meta[b"capbatch.run"])
    assert run_info["balance_before"] - run_info["balance_after"] == pytest.approx(30 * PRICE)


@pytest.mark.parametrize("deferred", [1.0, 0.5])
def test_deferred_and_mixed_answers_are_polled(
    tmp_path: Path, emulator: Start, deferred: float
) -> None:
    server = oracle(emulator, deferred=deferred, solve_time=(0.1, 0.4), seed=3)
    table = write_table(sample_frame(24), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    done = run_cli(*run_args(server, table, out, "--rate", "100"))
    assert done.returncode == 0, done.output
    result = pd.read_csv(out)
    assert_all_solved_right(result)
    stats = server.stats()
    assert stats["create_calls"] == 24
    assert (result["polls"] > 0).sum() == stats["deferred_created"] > 0
    assert stats["polls"] == result["polls"].sum()
    # Ready after 0.1-0.4 s: CapSolver's first poll at 1 s finds them all ready, so the
    # pacer has no reason to wait longer; the summary says what it learned.
    again = run_cli(*run_args(server, table, tmp_path / "again.parquet", "--no-cache"))
    run_info = json.loads(pq.read_metadata(tmp_path / "again.parquet").metadata[b"capbatch.run"])
    assert again.returncode == 0 and run_info["first_poll_s"] == 1.0


def test_retryable_errors_are_retried_until_they_succeed(tmp_path: Path, emulator: Start) -> None:
    server = oracle(
        emulator,
        seed=11,
        deferred=0.3,
        http_5xx_rate=0.1,
        unavailable_rate=0.1,
        malformed_rate=0.05,
        drop_rate=0.05,
        unsolvable_rate=0.1,
    )
    table = write_table(sample_frame(40), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out, "--rate", "200", "--max-attempts", "10"))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert_all_solved_right(result)
    assert result["attempts"].max() > 1
    stats = server.stats()
    # Every charged answer reached the output, except those whose reply was dropped.
    assert stats["solved"] - stats["dropped_after_create"] <= len(result)


def test_errors_stop_mattering_when_the_service_recovers(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, unavailable_rate=1.0)
    table = write_table(sample_frame(5), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    proc = start_cli(*run_args(server, table, out, "--rate", "50", "--max-attempts", "8"))
    deadline = time.monotonic() + 20
    while server.stats()["create_calls"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.control(unavailable_rate=0.0)
    assert proc.wait(timeout=60) == 0
    assert_all_solved_right(pd.read_parquet(out))


def test_non_retryable_errors_fail_once_and_a_systematic_failure_stops_the_run(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(60), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(
        *run_args(server, table, out, "--task-type", "NoSuchTask", "--max-in-flight", "1")
    )
    assert done.returncode == 1
    assert "ERROR_TASK_NOT_SUPPORTED" in done.stderr
    assert f"{SYSTEMATIC_RUN} different images in a row" in done.stderr
    stats = server.stats()
    assert stats["create_calls"] == SYSTEMATIC_RUN  # stopped instead of burning through 60
    assert stats["errors_by_code"]["ERROR_TASK_NOT_SUPPORTED"] == stats["create_calls"]


def test_a_setup_error_in_mid_run_stops_the_run_with_one_line_and_resumes_once_fixed(
    tmp_path: Path, emulator: Start
) -> None:
    # 30 rows are answered, then every createTask asks for a task type the emulator
    # does not support (as if it were withdrawn in mid-run): the run stops after 20
    # refusals of different images, not after the first 20 rows nor at the table's end.
    server = oracle(emulator)
    broken = {"on": True}

    def withdraw_the_task_type(endpoint: str, body: dict[str, Any], n: int) -> dict[str, Any]:
        if endpoint == "createTask" and n >= 30 and broken["on"]:
            body["task"]["type"] = "WithdrawnTask"
        return body

    table = write_table(sample_frame(100), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    with relay(server.url, withdraw_the_task_type) as front:
        args = ["run", table, "-o", out, "--base-url", front.url, "--quiet"]
        done = run_cli(*args, "--max-in-flight", "1")
        assert done.returncode == 1, done.output
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("capbatch: error: 20 different images")
        assert "ERROR_TASK_NOT_SUPPORTED" in errors[0] and "Traceback" not in done.output
        assert "the journal is intact" in done.stderr
        stats = server.stats()
        assert stats["create_calls"] == 30 + SYSTEMATIC_RUN
        assert stats["errors_by_code"]["ERROR_TASK_NOT_SUPPORTED"] == SYSTEMATIC_RUN
        assert not out.exists()  # nothing published as complete

        # Fixed (the task type is back): the same command, with --retry-failed for the
        # refused rows, pays for none of the 30 answers again and finishes the table.
        broken["on"] = False
        again = run_cli(*args, "--max-in-flight", "1", "--retry-failed")
        assert again.returncode == 0, again.output
    assert_all_solved_right(pd.read_parquet(out))
    assert server.stats()["solved"] == 100


def test_bad_key_stops_at_once_with_one_line(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(10), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    wrong = "sk-wrong-key-5551212"
    done = run_cli(*run_args(server, table, out), key=wrong)
    assert done.returncode == 1
    assert "ERROR_KEY_DENIED_ACCESS" in done.stderr
    assert server.stats()["create_calls"] == 0
    assert not out.exists()
    assert_key_absent(wrong, done.output, roots=(tmp_path,))


def test_zero_balance_mid_run_stops_and_resumes_after_a_top_up(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, balance=10 * PRICE)
    table = write_table(sample_frame(30), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "100")
    first = run_cli(*args)
    assert first.returncode == 1 and "ERROR_ZERO_BALANCE" in first.stderr
    assert "resume" in first.stderr or "same command" in first.stderr
    assert not out.exists()
    server.control(balance=1.0)
    second = run_cli(*args)
    assert second.returncode == 0, second.output
    assert_all_solved_right(pd.read_parquet(out))
    assert max(server.stats()["creates_by_hash"].values()) == 1  # nothing paid twice


def test_kill_9_mid_run_then_resume_never_recreates_a_journaled_task(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator, deferred=1.0, solve_time=(1.0, 2.0), seed=5)
    frame = sample_frame(60)
    table = write_table(frame, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--rate", "40", "--no-cache")
    proc = start_cli(*args)
    args.remove("--quiet")  # the resume prints its summary
    deadline = time.monotonic() + 30
    while server.stats()["create_calls"] < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=10)
    created_before = server.stats()["create_calls"]
    assert 0 < created_before < 60
    done = run_cli(*args)
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert_all_solved_right(result)
    stats = server.stats()
    reported = int(done.stderr.split("possible double payments: ")[1].split()[0])
    extra = stats["create_calls"] - 60
    assert extra <= reported  # every re-created task was counted as a possible double payment
    assert extra <= 2  # only the (at most 1-2) requests in flight at the kill


def test_spend_cap_is_never_exceeded(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, deferred=0.5, solve_time=(0.2, 0.5), seed=2)
    table = write_table(sample_frame(60), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    cap = 15 * PRICE
    done = run_cli(
        *run_args(server, table, out, "--rate", "500", "--max-in-flight", "50"),
        "--max-spend",
        str(cap),
    )
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    stats = server.stats()
    assert stats["charged_total"] <= cap + 1e-12
    assert result["cost_usd"].sum() <= cap + 1e-12
    not_sent = result[result["error_code"] == "SPEND_CAP_REACHED"]
    assert len(not_sent) == 60 - (result["status"] == "solved").sum() > 0


def test_identical_images_are_paid_once(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    frame = pd.concat([sample_frame(10), sample_frame(10)], ignore_index=True)
    frame["id"] = [f"dup-{i}" for i in range(20)]
    table = write_table(frame, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert_all_solved_right(result)
    assert server.stats()["create_calls"] == 10
    hits = result[result["from_cache"]]
    assert len(hits) == 10 and (hits["cost_usd"] == 0).all()
    # Appending rows and re-running sends only the new ones.
    more = pd.concat([frame, sample_frame(5, start=100)], ignore_index=True)
    write_table(more, table)
    again = run_cli(*run_args(server, table, out))
    assert again.returncode == 0, again.output
    assert server.stats()["create_calls"] == 15
    assert_all_solved_right(pd.read_parquet(out))


def test_no_cache_sends_every_row(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    frame = pd.concat([sample_frame(4), sample_frame(4)], ignore_index=True)
    table = write_table(frame, tmp_path / "in.parquet")
    done = run_cli(*run_args(server, table, tmp_path / "o.parquet", "--no-cache"))
    assert done.returncode == 0, done.output
    assert server.stats()["create_calls"] == 8


def test_every_bad_input_row_gets_its_own_error_and_the_rest_completes(
    tmp_path: Path, emulator: Start
) -> None:
    server = oracle(emulator)
    good = sample_frame(3)
    good_png = Path(good["image_path"][0]).read_bytes()
    (tmp_path / "a dir").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.png").write_bytes(good_png[: len(good_png) // 2])
    (tmp_path / "ünïcode päth.png").write_bytes(good_png)
    big = tmp_path / "big.png"
    big.write_bytes(good_png + b"\0" * 600_000)
    bad = {
        "missing.png": "INPUT_FILE_NOT_FOUND",
        str(tmp_path / "a dir"): "INPUT_IS_DIRECTORY",
        str(tmp_path / "empty.png"): "INPUT_EMPTY",
        str(tmp_path / "notes.txt"): "INPUT_NOT_AN_IMAGE",
        str(tmp_path / "cut.png"): "INPUT_TRUNCATED_IMAGE",
        "data:text/plain;base64," + base64.b64encode(b"hello world").decode(): "INPUT_NOT_AN_IMAGE",
        _damaged_base64(good_png): "INPUT_INVALID_BASE64",
        base64.b64encode(good_png[:60]).decode(): "INPUT_TRUNCATED_IMAGE",
        str(big): "INPUT_TOO_LARGE",
        "": "INPUT_NULL",
    }
    rows = [{"id": f"bad-{i}", "image_path": v, "label": "x"} for i, v in enumerate(bad)]
    rows.append({"id": "uni", "image_path": str(tmp_path / "ünïcode päth.png"), "label": "u"})
    frame = pd.concat([good[["id", "image_path", "label"]], pd.DataFrame(rows)], ignore_index=True)
    table = write_table(frame, tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    done = run_cli(*run_args(server, table, out))
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out).set_index("id")
    for i, code in enumerate(bad.values()):
        row = result.loc[f"bad-{i}"]
        assert row["status"] == "failed" and row["error_code"] == code, (i, row["error_message"])
        assert row["error_message"]
    assert (result.loc[good["id"], "status"] == "solved").all()
    assert result.loc["uni", "status"] == "solved"


def _damaged_base64(png: bytes) -> str:
    text = base64.b64encode(png).decode()
    return text[:50] + "*" + text[50:]


@pytest.mark.parametrize(
    ("provider", "app_id"),
    [
        ("capsolver", "A1B2-app"),
        ("anticaptcha", "4580"),
        ("capmonster", "55"),
        ("twocaptcha", "4580"),
    ],
)
def test_the_developer_id_reaches_each_provider_in_its_own_field_and_type(
    tmp_path: Path, emulator: Start, provider: str, app_id: str
) -> None:
    # The emulator's dialect counts a developer id only in its provider's field and JSON
    # type (appId a string, softId an integer); any other form is "ignored".
    server = oracle(emulator, dialect=provider)
    table = write_table(sample_frame(4), tmp_path / "in.parquet")
    args = run_args(server, table, tmp_path / "out.parquet", "--provider", provider)
    done = run_cli(*args, "--app-id", app_id, env={f"{provider.upper()}_API_KEY": KEY})
    assert done.returncode == 0, done.output
    stats = server.stats()
    assert stats["developer_ids"] == {app_id: stats["create_calls"]}
    assert stats["developer_id_ignored"] == 0


def test_images_a_provider_would_refuse_fail_their_rows_without_a_request(
    tmp_path: Path, emulator: Start
) -> None:
    # 2Captcha: 100 bytes to 100 kB, at most 1000 px a side (TC7-TC9). Those rows fail
    # here; the emulator (speaking 2Captcha) sees only the good ones.
    server = oracle(emulator, dialect="twocaptcha")
    frame = sample_frame(4)
    for name, size, mode in (("wide", (1001, 30), "RGB"), ("tiny", (1, 1), "L")):
        image = Image.new(mode, size, 200)
        image.save(tmp_path / f"{name}.{'png' if name == 'wide' else 'gif'}")
    extra = pd.DataFrame(
        {
            "image_path": [str(tmp_path / "wide.png"), str(tmp_path / "tiny.gif")],
            "label": ["x", "y"],
            "id": ["wide", "tiny"],
        }
    )
    table = write_table(pd.concat([frame, extra], ignore_index=True), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = run_args(server, table, out, "--provider", "twocaptcha")
    done = run_cli(*args, env={"TWOCAPTCHA_API_KEY": KEY})
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out).set_index("id")
    assert result.loc["wide", "error_code"] == "INPUT_TOO_LARGE"
    assert "1000" in result.loc["wide", "error_message"]
    assert result.loc["tiny", "error_code"] == "INPUT_TOO_SMALL"
    assert (result.loc[frame["id"], "status"] == "solved").all()
    stats = server.stats()
    assert stats["create_calls"] == len(frame) and not stats["errors_by_code"]


@pytest.mark.parametrize("provider", ["anticaptcha", "capmonster", "twocaptcha"])
def test_a_soft_id_that_is_not_a_number_exits_2_before_anything_is_sent(
    tmp_path: Path, emulator: Start, provider: str
) -> None:
    server = oracle(emulator)
    table = write_table(sample_frame(3), tmp_path / "in.parquet")
    args = run_args(server, table, tmp_path / "out.parquet", "--provider", provider)
    env = {f"{provider.upper()}_API_KEY": KEY}
    done = run_cli(*args, "--app-id", "my-app", env=env)
    assert done.returncode == 2, done.output
    assert done.stderr.startswith("capbatch: error: --app-id must be a whole number")
    assert server.stats()["requests_total"] == 0
    assert not (tmp_path / "out.journal.sqlite").exists()


def test_dry_run_sends_nothing_and_estimates(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator)
    frame = pd.concat([sample_frame(8), sample_frame(4)], ignore_index=True)
    table = write_table(frame, tmp_path / "in.parquet")
    done = run_cli("run", str(table), "--base-url", server.url, "--dry-run", "--rate", "4")
    assert done.returncode == 0, done.output
    assert "12 rows, 8 unique images to send" in done.stdout
    assert "$0.0032" in done.stdout and "2.0 s" in done.stdout
    assert server.stats()["requests_total"] == 0


def test_no_provider_and_no_key_solves_locally_and_says_so(tmp_path: Path) -> None:
    table = write_table(sample_frame(6), tmp_path / "in.parquet")
    done = run_cli("run", str(table), key=None)
    assert done.returncode == 0, done.output
    assert done.stderr.count("solving locally") == 1
    out = tmp_path / "in.parquet.results.parquet"  # the input's whole name: never shared
    assert done.stdout.strip().endswith(str(out))
    result = pd.read_parquet(out)
    assert (result["status"] == "solved").all() and (result["provider"] == "local").all()
    assert (result["cost_usd"] == 0).all()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = run_cli("run", str(tmp_path / "nope.parquet"), key=None)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "nope.parquet" in missing.stderr
    bad_flag = run_cli("run", str(tmp_path / "x.parquet"), "--rate", "fast", key=None)
    assert bad_flag.returncode == 2


def test_the_key_is_in_no_file_written_and_no_output(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, deferred=0.5, unavailable_rate=0.2, seed=9)
    table = write_table(sample_frame(20), tmp_path / "in.parquet")
    csv_out = tmp_path / "out.csv"
    done = run_cli("run", str(table), "-o", str(csv_out), "--base-url", server.url)
    assert done.returncode == 0, done.output
    assert_key_absent(KEY, done.output, roots=(tmp_path,))


def test_ctrl_c_leaves_a_resumable_journal(tmp_path: Path, emulator: Start) -> None:
    server = oracle(emulator, deferred=1.0, solve_time=(0.5, 1.0), seed=8)
    table = write_table(sample_frame(40), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    log = tmp_path / "first.log"
    args = run_args(server, table, out, "--rate", "30")
    proc = start_cli(*args, log=log)
    deadline = time.monotonic() + 30
    while server.stats()["create_calls"] < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert "run the same command to resume" in log.read_text()
    # Written, but marked incomplete: the rows not finished are pending.
    first = pd.read_parquet(out)
    assert len(first) == 40 and set(first["status"]) <= {"solved", "pending"}
    assert pq.read_metadata(out).metadata[b"capbatch.complete"] == b"false"
    done = run_cli(*args)
    assert done.returncode == 0, done.output
    assert_all_solved_right(pd.read_parquet(out))
    # The stop waited for the requests in flight: no task was created twice.
    assert server.stats()["create_calls"] == 40
