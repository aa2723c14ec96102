"""Reliability: the real CLI against a hostile provider on loopback (``hostile.py``).

Each test runs ``capbatch run`` as a subprocess against a server that misbehaves in one
way a real attack on the client found, and checks what the user would see: no piece of
the key in any file, in stdout or in stderr; no terminal escapes on the terminal; rows
stored even when the provider's text is not storable; memory and time bounded.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e.runner_helpers import (
    KEY,
    CliResult,
    files_under,
    run_cli,
    sample_frame,
    start_cli,
    write_table,
)
from tests.fakes import key_forms
from tests.reliability.hostile import (
    KEY_FORMS,
    HostileServer,
    Reply,
    echo,
    error,
    raw_json,
    serve,
)

#: Pieces of the key this long are masked wherever they appear (``_secrets.MIN_FRAGMENT``).
FRAGMENT = 6
ESCAPE_BYTES = ("\x1b", "\x07", "\x9b")


def _unescaped(text: str) -> list[str]:
    """``text`` and its JSON-, URL- and HTML-unescaped readings."""
    json_form = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    url_form = re.sub(r"%(?:25)*([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    html_form = re.sub(r"&#([0-9]{1,7});", lambda m: chr(int(m.group(1))), text)
    return [text, json_form, url_form, html_form]


def key_pieces_in(text: str) -> set[str]:
    """Pieces of KEY (``FRAGMENT`` characters or more, any case, plain or escaped)."""
    folded = KEY.lower()
    windows = {folded[i : i + FRAGMENT] for i in range(len(folded) - FRAGMENT + 1)}
    return {w for variant in _unescaped(text) for w in windows if w in variant.lower()}


def assert_no_key_anywhere(done: CliResult, tmp_path: Path) -> None:
    """No piece of the key in stdout, stderr or any file the run wrote."""
    assert not key_pieces_in(done.stdout), done.stdout
    assert not key_pieces_in(done.stderr), done.stderr
    for path in files_under(tmp_path):
        found = key_pieces_in(path.read_bytes().decode("latin-1"))
        assert not found, f"pieces of the key {found} in {path.name}"


def assert_no_terminal_escapes(done: CliResult) -> None:
    for byte in ESCAPE_BYTES:
        assert byte not in done.stdout, f"{byte!r} on stdout"
        assert byte not in done.stderr, f"{byte!r} on stderr"


def run(
    server: HostileServer,
    tmp_path: Path,
    rows: int,
    *extra: str,
    output: str = "out.csv",
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[CliResult, Path]:
    table = write_table(sample_frame(rows), tmp_path / "in.csv")
    out = tmp_path / output
    done = run_cli(
        "run",
        table,
        "-o",
        out,
        "--base-url",
        server.url,
        *(extra or ("--provider", "capsolver")),
        env=env,
        timeout=timeout,
    )
    return done, out


def test_the_leak_check_sees_every_form() -> None:
    # The checks below prove nothing unless they would catch each form unmasked.
    for form in KEY_FORMS:
        text = key_forms(KEY)[form]
        assert key_pieces_in(f"error: {text} ok"), form


# --- D: the key echoed back ------------------------------------------------------------

DESCRIPTION = '{"errorId":1,"errorCode":"ERROR_INVALID_TASK_DATA","errorDescription":"%s"}'


@pytest.mark.parametrize("form", KEY_FORMS)
def test_key_echoed_in_an_error_description_reaches_no_file_or_terminal(
    tmp_path: Path, form: str
) -> None:
    reply = echo(DESCRIPTION % "clientKey {key} is not allowed for this task", form)
    with serve({"/createTask": reply}) as server:
        done, out = run(server, tmp_path, 2)
    assert done.returncode == 0, done.output
    result = pd.read_csv(out)
    assert len(result) == 2 and (result["status"] == "failed").all()
    assert (result["error_code"] == "ERROR_INVALID_TASK_DATA").all()
    # The echo arrived and was masked, not dropped.
    assert result["error_message"].str.contains(r"clientKey \*\*\*\* is not", regex=True).all()
    assert server.keys_seen == {KEY}
    assert_no_key_anywhere(done, tmp_path)


#: Characters of reply text per character of the key, by form.
WIDTH = {"exact": 1, "lower": 1, "upper": 1, "prefix8": 1, "json_all": 6, "url_all": 3}


@pytest.mark.parametrize("form", list(WIDTH))
def test_key_echoed_in_a_page_cut_mid_key_reaches_no_file_or_terminal(
    tmp_path: Path, form: str
) -> None:
    # The error message keeps an 80-character excerpt; the key's form starts where 6
    # characters of the key fit before the cut, so cutting before masking keeps
    # "sk-e2e" (in that form).
    filler = "x" * (80 - len("<html>") - FRAGMENT * WIDTH[form])
    page = echo("<html>" + filler + "{key} was refused</html>", form, content_type="text/html")
    with serve({"/createTask": page}) as server:
        done, out = run(server, tmp_path, 1, "--provider", "capsolver", "--max-attempts", "2")
    assert done.returncode == 0, done.output
    result = pd.read_csv(out)
    assert result["status"].tolist() == ["failed"]
    assert result["error_code"].tolist() == ["MALFORMED_REPLY"]
    assert "not a JSON object" in result["error_message"][0]
    assert server.count("/createTask") == 2
    assert_no_key_anywhere(done, tmp_path)


@pytest.mark.parametrize("form", ["upper", "json_dash", "url_dash"])
def test_key_echoed_in_a_run_fatal_error_stays_off_stderr(tmp_path: Path, form: str) -> None:
    denied = echo(
        '{"errorId":1,"errorCode":"ERROR_KEY_DENIED_ACCESS",'
        '"errorDescription":"the key {key} does not exist"}',
        form,
    )
    denied.status = 401
    with serve({"/getBalance": denied, "/createTask": denied}) as server:
        done, _ = run(server, tmp_path, 2)
    assert done.returncode != 0
    assert "ERROR_KEY_DENIED_ACCESS" in done.stderr
    assert "the key **** does not exist" in done.stderr
    assert_no_key_anywhere(done, tmp_path)


# --- A: text no terminal, file or database can take -------------------------------------

PWNED = "\x1b]0;PWNED\x07"


def test_terminal_escapes_from_the_provider_never_reach_the_terminal(tmp_path: Path) -> None:
    script = {
        "/createTask": [
            Reply(body=raw_json({"errorId": 0, "status": "ready", "solution": {"text": PWNED}})),
            error(f"ERR_{PWNED}", f"desc {PWNED}\x9b2J"),
        ]
    }
    with serve(script) as server:
        done, out = run(server, tmp_path, 2)
    assert done.returncode == 0, done.output
    assert_no_terminal_escapes(done)
    # The failed row's code is echoed in the summary, escaped.
    assert "ERR_\\x1b]0;PWNED\\x07" in done.stderr
    result = pd.read_csv(out)
    assert sorted(result["status"]) == ["failed", "solved"]
    solved = result[result["status"] == "solved"]
    assert solved["answer"].tolist() == ["\\x1b]0;PWNED\\x07"]
    for path in files_under(tmp_path):
        data = path.read_bytes()
        assert b"\x1b]0;PWNED" not in data, path.name


def test_run_fatal_error_with_terminal_escapes_prints_them_escaped(tmp_path: Path) -> None:
    fatal = error(f"ERR_{PWNED}", f"no {PWNED}", status=401)
    with serve({"/getBalance": fatal, "/createTask": fatal}) as server:
        done, _ = run(server, tmp_path, 1)
    assert done.returncode != 0
    assert "ERR_\\x1b]0;PWNED\\x07" in done.stderr
    assert_no_terminal_escapes(done)


def test_lone_surrogates_are_stored_as_replacement_characters(tmp_path: Path) -> None:
    surrogate = "ab\ud800cd"
    ready_reply = Reply(
        body=raw_json({"errorId": 0, "status": "ready", "solution": {"text": surrogate}})
    )
    assert b"\\ud800" in raw_json({"text": surrogate})  # valid JSON, lone surrogate
    script = {
        "/createTask": [
            ready_reply,
            ready_reply,
            error("ERROR_INVALID_TASK_DATA", "bad \ud800 image"),
            ready_reply,
        ]
    }
    with serve(script) as server:
        done, out = run(server, tmp_path, 4, output="out.parquet")
    assert done.returncode == 0, done.output
    result = pd.read_parquet(out)
    assert len(result) == 4 and result["id"].is_unique
    solved = result[result["status"] == "solved"]
    failed = result[result["status"] == "failed"]
    assert solved["answer"].tolist() == ["ab\ufffdcd"] * 3
    assert failed["error_message"].tolist() == ["ERROR_INVALID_TASK_DATA: bad \ufffd image"]


# --- B: costs that are not amounts ------------------------------------------------------


def test_nonsense_costs_are_never_summed(tmp_path: Path) -> None:
    costs: list[object] = [float("nan"), -1.0, 1e9, float("inf"), "0.000700"]
    replies = [
        Reply(
            body=raw_json(
                {
                    "errorId": 0,
                    "status": "ready",
                    "taskId": 1000 + i,
                    "solution": {"text": "ok"},
                    "cost": cost,
                }
            )
        )
        for i, cost in enumerate(costs)
    ]
    with serve({"/createTask": replies}) as server:
        done, out = run(
            server,
            tmp_path,
            len(costs),
            "--provider",
            "anticaptcha",
            env={"ANTICAPTCHA_API_KEY": KEY},
        )
    assert done.returncode == 0, done.output
    result = pd.read_csv(out)
    assert (result["status"] == "solved").all()
    spent = result["cost_usd"]
    assert spent.notna().all() and (spent >= 0).all() and (spent <= 10).all(), spent.tolist()
    assert 0 < spent.sum() < 1
    for word in ("nan", "inf", "-1.0", "1000000000"):
        assert word not in done.stderr.lower().split("spend")[-1].split("\n")[0]


# --- C: a 200 MB reply ------------------------------------------------------------------


#: Runs its arguments as a command and prints the command's peak RSS (kB) last.
PEAK_REPORTER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(f'peak_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', flush=True); "
    "sys.exit(code)"
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux")
def test_a_200_mb_reply_keeps_the_client_small(tmp_path: Path) -> None:
    huge = Reply(body=b'{"errorId":0,"status":"ready","solution":{"text":"', huge=200_000_000)
    table = write_table(sample_frame(1), tmp_path / "in.csv")
    out, log = tmp_path / "out.csv", tmp_path / "run.log"
    with serve({"/createTask": huge}) as server:
        started = time.monotonic()
        args = ["run", table, "-o", out, "--base-url", server.url, "--provider", "capsolver"]
        # The run is started by a small Python process that reports its child's peak.
        # Measured from the test process itself, the peak would include this worker's
        # own size: a forked child counts the parent's pages until it execs, and an
        # xdist worker that ran notebooks and reports is hundreds of MB.
        proc = start_cli(*args, "--max-attempts", "2", log=log, via=PEAK_REPORTER)
        assert proc.wait(timeout=120) == 0, log.read_text()
        elapsed = time.monotonic() - started
    peak_mb = int(log.read_text().rsplit("peak_kb=", 1)[1]) / 1024
    assert peak_mb < 400, f"the run peaked at {peak_mb:.0f} MB"
    result = pd.read_csv(out)
    assert result["status"].tolist() == ["failed"]
    assert result["error_code"].tolist() == ["REPLY_TOO_LARGE"]
    assert server.count("/createTask") == 2
    assert elapsed < 45


# --- E: waits a server asks for, and servers that never finish ----------------------------


@pytest.mark.parametrize("retry_after", ["86400", "inf"])
def test_huge_retry_after_does_not_stall_the_run(tmp_path: Path, retry_after: str) -> None:
    limited = error("ERROR_RATE_LIMIT", "slow down", status=429, **{"Retry-After": retry_after})
    ready_reply = Reply(
        body={"errorId": 0, "status": "ready", "taskId": "t", "solution": {"text": "ok"}}
    )
    with serve({"/createTask": [limited, ready_reply]}) as server:
        started = time.monotonic()
        # The cap is made short for the test; its default is RETRY_AFTER_CAP (300 s).
        done, out = run(server, tmp_path, 3, env={"CAPBATCH_RETRY_AFTER_CAP": "2"}, timeout=60)
        elapsed = time.monotonic() - started
    assert done.returncode == 0, done.output
    result = pd.read_csv(out)
    assert (result["status"] == "solved").all(), result[["status", "error_code"]]
    assert server.count("/createTask") == 4  # one refused, then one per row
    # Well under the runner's outage probe (30 s after a long Retry-After): the capped
    # wait was honoured as a short slow-down.
    assert elapsed < 20, elapsed


def test_a_dripping_server_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    drip = Reply(drip=1.0)  # one byte a second: inside every per-read timeout
    with serve({"/createTask": drip}) as server:
        started = time.monotonic()
        done, out = run(
            server,
            tmp_path,
            1,
            "--provider",
            "capsolver",
            "--max-attempts",
            "2",
            env={"CAPBATCH_REQUEST_DEADLINE": "3"},
            timeout=60,
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 0, done.output
    result = pd.read_csv(out)
    assert result["status"].tolist() == ["failed"]
    assert result["error_code"].tolist() == ["REQUEST_TIMEOUT"]
    assert server.count("/createTask") == 2
    assert 5 < elapsed < 45, elapsed


def test_hostile_server_counts_and_scripts() -> None:
    # The harness itself: scripts run in order, the last reply repeats, counts add up.
    import urllib.request

    script = {"/createTask": [error("E1"), Reply(body={"errorId": 0, "taskId": "x"})]}
    with serve(script) as server:
        bodies = []
        for _ in range(3):
            request = urllib.request.Request(
                server.url + "/createTask",
                data=json.dumps({"clientKey": "k-1"}).encode(),
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as reply:  # loopback only
                bodies.append(json.loads(reply.read()))
    assert [b.get("errorCode") for b in bodies] == ["E1", None, None]
    assert server.count("/createTask") == 3 and server.keys_seen == {"k-1"}
