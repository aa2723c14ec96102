"""Wrong-answer reports: each provider's report call (over ``httpx.MockTransport``), at
most once per task (the journal's reports table), the provider's window, what each
outcome does, the ``reported`` column in files and journal, and the matching rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from capbatch._exceptions import AuthError
from capbatch._io.labels import answer_is_wrong, case_sensitive_run
from capbatch._io.outputs import ResultWriter, read_results
from capbatch._io.record import JOURNAL_COLUMNS, RESULT_COLUMNS, RowResult
from capbatch._io.reported import read_reported, write_reported
from capbatch._providers.client import ProviderClient
from capbatch._providers.profiles import (
    ANTICAPTCHA,
    CAPMONSTER,
    CAPSOLVER,
    LOCAL,
    TWOCAPTCHA,
    ProviderProfile,
)
from capbatch._reports.metrics import score
from capbatch._run.feedback import Rows, candidates, feedback
from capbatch._run.journal import Journal
from capbatch._run.wrong_answers import Candidate, WrongAnswers

KEY = "sk-SECRET-report-1"
UUID = "2376919c-1863-11ec-a012-94e6f7355a0b"
NOW = 1_800_000_000.0


class Provider:
    """A MockTransport handler: canned replies, every request kept."""

    def __init__(self, reply: httpx.Response | Exception | None = None) -> None:
        self.reply = reply or httpx.Response(200, json={"errorId": 0, "status": "success"})
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def bodies(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.url.path, json.loads(r.content)) for r in self.requests]


def reporter(
    provider: Provider, profile: ProviderProfile, journal: Journal, now: float = NOW
) -> WrongAnswers:
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    client = ProviderClient(profile, KEY, base_url="https://api.test", http_client=http)
    return WrongAnswers(client, profile, journal, now=lambda: now)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "out.journal.sqlite")


# --- each provider's call -----------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "task_id", "path", "body"),
    [
        (
            CAPSOLVER,
            UUID,
            "/feedbackTask",
            {"clientKey": KEY, "taskId": UUID, "result": {"invalid": True}},
        ),
        (ANTICAPTCHA, "777", "/reportIncorrectImageCaptcha", {"clientKey": KEY, "taskId": 777}),
        (CAPMONSTER, "777", "/reportIncorrectImageCaptcha", {"clientKey": KEY, "taskId": 777}),
        (TWOCAPTCHA, "777", "/reportIncorrect", {"clientKey": KEY, "taskId": 777}),
    ],
    ids=["capsolver", "anticaptcha", "capmonster", "twocaptcha"],
)
async def test_each_provider_gets_its_report_call_once(
    journal: Journal, profile: ProviderProfile, task_id: str, path: str, body: dict[str, Any]
) -> None:
    reply = {"errorId": 0, "message": "ok"} if profile is CAPSOLVER else None
    provider = Provider(httpx.Response(200, json=reply) if reply else None)
    reports = reporter(provider, profile, journal)
    candidate = Candidate(task_id, finished_at=NOW - 5)
    assert await reports.report(candidate) == "reported"
    assert await reports.report(candidate) == "reported"  # the same task again: not sent
    assert provider.bodies() == [(path, body)]
    assert journal.reports([task_id]) == {task_id: ("reported", None)}
    # A later command on the same journal finds it and sends nothing.
    again = reporter(provider, profile, journal)
    assert again.skip_known([candidate, candidate]) == []
    assert again.counts.before == 1 and again.outcomes == {task_id: "reported"}
    assert len(provider.requests) == 1


def test_report_calls_come_from_the_profiles() -> None:
    assert (CAPSOLVER.report_endpoint, CAPSOLVER.report_style) == ("/feedbackTask", "feedback")
    for profile in (ANTICAPTCHA, CAPMONSTER):
        assert profile.report_endpoint == "/reportIncorrectImageCaptcha"
    assert TWOCAPTCHA.report_endpoint == "/reportIncorrect"
    assert ANTICAPTCHA.report_window == 60.0
    assert {p.report_window for p in (CAPSOLVER, CAPMONSTER, TWOCAPTCHA)} == {None}


# --- the window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finished_at", "sent", "reason"),
    [
        (NOW - 10, True, None),
        (NOW - 61, False, "finished 61 s ago; anticaptcha takes reports within 60 s"),
        (None, False, "finish time unknown; anticaptcha takes reports within 60 s of it"),
    ],
    ids=["inside", "outside", "unknown"],
)
async def test_anticaptcha_takes_reports_within_60_s_of_completion(
    journal: Journal, finished_at: float | None, sent: bool, reason: str | None
) -> None:
    provider = Provider()
    reports = reporter(provider, ANTICAPTCHA, journal)
    outcome = await reports.report(Candidate("42", finished_at))
    assert outcome == ("reported" if sent else "not_reportable")
    assert len(provider.requests) == (1 if sent else 0)
    assert journal.reports(["42"]) == {"42": (outcome, reason)}
    if reason is not None:
        assert reports.counts.reasons == {"42": reason}


async def test_no_documented_window_sends_an_old_task(journal: Journal) -> None:
    provider = Provider()
    reports = reporter(provider, CAPMONSTER, journal)
    assert await reports.report(Candidate("42", NOW - 3600)) == "reported"
    assert len(provider.requests) == 1


async def test_local_has_no_report_call(journal: Journal) -> None:
    reports = WrongAnswers(object(), LOCAL, journal)  # type: ignore[arg-type]
    assert await reports.report(Candidate("x", NOW)) == "not_reportable"
    assert journal.reports(["x"])["x"][1] == "local has no call to report a wrong answer"


# --- outcomes -----------------------------------------------------------------------


async def test_a_refused_report_is_journaled_and_never_sent_again(journal: Journal) -> None:
    refusal = {"errorId": 16, "errorCode": "ERROR_NO_SUCH_CAPCHA_ID", "errorDescription": "x"}
    provider = Provider(httpx.Response(200, json=refusal))
    assert await reporter(provider, TWOCAPTCHA, journal).report(Candidate("9", NOW)) == "refused"
    assert journal.reports(["9"]) == {"9": ("refused", "ERROR_NO_SUCH_CAPCHA_ID")}
    assert await reporter(provider, TWOCAPTCHA, journal).report(Candidate("9", NOW)) == "refused"
    assert len(provider.requests) == 1


async def test_a_bad_key_stops_reporting_and_journals_nothing(journal: Journal) -> None:
    denied = {"errorId": 1, "errorCode": "ERROR_KEY_DOES_NOT_EXIST", "errorDescription": "x"}
    provider = Provider(httpx.Response(200, json=denied))
    reports = reporter(provider, CAPMONSTER, journal)
    with pytest.raises(AuthError):
        await reports.report(Candidate("9", NOW))
    with pytest.raises(AuthError):
        await reports.report(Candidate("10", NOW))  # not sent: reporting has stopped
    assert len(provider.requests) == 1
    assert journal.reports(["9", "10"]) == {}


async def test_nothing_sent_is_tried_again_a_lost_reply_is_not(journal: Journal) -> None:
    refused = Provider(httpx.ConnectError("refused"))
    assert await reporter(refused, CAPMONSTER, journal).report(Candidate("1", NOW)) == "unsent"
    assert journal.reports(["1"]) == {}
    lost = Provider(httpx.ReadError("reset"))
    assert await reporter(lost, CAPMONSTER, journal).report(Candidate("1", NOW)) == "uncertain"
    assert journal.reports(["1"])["1"][0] == "uncertain"
    assert await reporter(lost, CAPMONSTER, journal).report(Candidate("1", NOW)) == "uncertain"
    assert len(lost.requests) == 1


# --- the reported column: one field, the output column and the journal column -------


def test_reported_is_one_record_field_giving_both_columns(journal: Journal) -> None:
    assert "reported" in RESULT_COLUMNS
    (column,) = [c for c in JOURNAL_COLUMNS if c.field == "reported"]
    assert column.merge == "newer"
    journal.record_result("k1", RowResult(status="solved", answer="ab", task_id="t1"))
    journal.record_report("t1", provider="capsolver", outcome="reported", detail=None, at=NOW)
    assert journal.get_many(["k1"])["k1"].result.reported == "reported"
    # A later final write of the task (a resumed run) keeps the report's outcome.
    journal.record_result("k1", RowResult(status="solved", answer="ab", task_id="t1"))
    assert journal.get_many(["k1"])["k1"].result.reported == "reported"
    # The first outcome of a task stays.
    journal.record_report("t1", provider="capsolver", outcome="refused", detail="x", at=NOW)
    assert journal.reports(["t1"]) == {"t1": ("reported", None)}


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_reported_keeps_the_rest_of_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    inputs = pa.table({"id": ["0042", "b"], "label": ["=x", ""]})
    results = [
        RowResult(status="solved", answer="=x", task_id="t1", finished_at=NOW),
        RowResult(status="failed", error_code="E"),
    ]
    with ResultWriter(path, inputs.schema) as writer:
        writer.write(inputs.to_batches()[0], results, first_row=0)
        writer.finish({"capbatch.provider": "capsolver"})
    before = read_results(path)
    write_reported(path, ["reported", None])
    after = read_results(path)
    assert read_reported(path) == ["reported", None]
    assert list(after.columns) == list(before.columns)
    pd.testing.assert_frame_equal(after.drop(columns="reported"), before.drop(columns="reported"))
    if suffix == ".parquet":
        assert pq.read_metadata(path).metadata[b"capbatch.provider"] == b"capsolver"


# --- which rows are wrong -----------------------------------------------------------

CASES = [
    ("abc", "abc"),
    (" abc ", "abc"),
    ("ABC", "abc"),
    ("abd", "abc"),
    (None, "abc"),
    ("", "abc"),
    ("abc", None),
    ("abc", "  "),
    ("STRASSE", "straße"),
    ("ab c", "abc"),
]


@pytest.mark.parametrize("case_sensitive", [False, True])
def test_the_row_rule_agrees_with_the_report(case_sensitive: bool) -> None:
    frame = pd.DataFrame(
        {
            "status": ["solved"] * len(CASES),
            "answer": [a for a, _ in CASES],
            "label": [b for _, b in CASES],
        }
    )
    scored = score(frame, "label", case_sensitive=case_sensitive)
    by_report = (scored["labelled"] & ~scored["correct"]).tolist()
    by_row = [answer_is_wrong(a, b, case_sensitive=case_sensitive) for a, b in CASES]
    assert by_row == by_report
    assert by_row[2] is case_sensitive  # "ABC" for "abc": wrong only with case


def test_case_comes_from_the_runs_task_params() -> None:
    assert case_sensitive_run({"case": True}) and case_sensitive_run({"case": "true"})
    assert not case_sensitive_run({"case": False}) and not case_sensitive_run({})
    assert not case_sensitive_run(None)


def test_rows_sharing_a_task_make_one_candidate() -> None:
    rows = Rows(
        wrong=[True, True, False, True],
        task_ids=["t1", "t1", "t2", None],
        finished_at=[None, NOW, NOW, NOW],
    )
    assert candidates(rows) == [Candidate("t1", NOW)]


def test_feedback_writes_the_column_and_reports_each_task_once(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    inputs = pa.table({"label": ["ab", "cd", "ef", "gh"]})
    results = [
        RowResult(status="solved", answer="ab", task_id="t1", finished_at=NOW),
        RowResult(status="solved", answer="xx", task_id="t2", finished_at=NOW),
        RowResult(status="solved", answer="yy", task_id="t3", finished_at=NOW),
        RowResult(status="solved", answer="zz"),
    ]
    with ResultWriter(path, inputs.schema) as writer:
        writer.write(inputs.to_batches()[0], results, first_row=0)
        writer.finish({})
    provider = Provider()
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    client = ProviderClient(TWOCAPTCHA, KEY, base_url="https://api.test", http_client=http)
    rows = Rows([False, True, True, True], ["t1", "t2", "t3", None], [NOW] * 4)
    journal = tmp_path / "out.journal.sqlite"
    args: dict[str, Any] = {
        "profile": TWOCAPTCHA,
        "key": None,
        "base_url": None,
        "journal_path": journal,
        "service": client,
    }
    done = feedback(path, rows, **args)
    assert done.wrong_rows == 3 and done.counts.counts["reported"] == 2
    assert done.counts.counts["not_reportable"] == 1  # no task id
    assert read_reported(path) == [None, "reported", "reported", "not_reportable"]
    assert sorted(json.loads(r.content)["taskId"] for r in provider.requests) == ["t2", "t3"]
    again = feedback(path, rows, **args)
    assert len(provider.requests) == 2 and again.counts.before == 2
    assert "already reported before: 2" in again.line()


# --- run --report-wrong: the per-row path -------------------------------------------


async def test_live_reports_only_wrong_rows_the_run_paid_for(tmp_path: Path) -> None:
    from capbatch._io.inputs import TableSource
    from capbatch._run.live_reports import LiveReports, read_labels

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"image": ["a.png"] * 4, "label": ["ab", "CD", "ef", None]}), source)
    labels = read_labels(TableSource(source, image_column="image"), "label")
    assert labels == ["ab", "CD", "ef", None]
    journal = Journal(tmp_path / "j.sqlite")
    provider = Provider()
    seen: list[int] = []
    live = LiveReports(
        reporter(provider, CAPMONSTER, journal),
        labels,
        case_sensitive=False,
        on_result=lambda row, _result: seen.append(row),
    )
    live.on_result(0, RowResult(status="solved", answer="ab", task_id="1"))  # right
    live.on_result(1, RowResult(status="solved", answer="cd", task_id="2"))  # case only
    live.on_result(2, RowResult(status="solved", answer="xx", task_id="3"))  # wrong
    live.on_result(2, RowResult(status="solved", answer="xx", task_id="3", from_cache=True))
    live.on_result(3, RowResult(status="solved", answer="zz", task_id="4"))  # unlabelled
    await live.drain(5.0)
    assert seen == [0, 1, 2, 2, 3]  # the user's own callback still sees every row
    assert [json.loads(r.content)["taskId"] for r in provider.requests] == [3]
    assert live.wrong == 1 and live.rows == {2: "3"}
    assert journal.reports(["3"]) == {"3": ("reported", None)}
    journal.close()


async def test_a_report_that_fails_unexpectedly_says_why_reporting_stopped(
    tmp_path: Path,
) -> None:
    """A fault that is not the provider's (here the journal's) is kept as the reason
    reporting stopped and said at the end, not lost with its task."""
    from capbatch._run.live_reports import LiveReports

    journal = Journal(tmp_path / "j.sqlite")
    broken = reporter(Provider(), CAPMONSTER, journal)
    broken.journal = None  # type: ignore[assignment]
    live = LiveReports(broken, ["ab"], case_sensitive=False)
    live.on_result(0, RowResult(status="solved", answer="xx", task_id="1"))
    said: list[str] = []
    await live.finish(None, 5.0, said.append)
    assert "reporting stopped: unexpected AttributeError" in said[-1]
    journal.close()


def test_the_ray_journal_forwards_every_journal_method() -> None:
    """``RemoteJournal`` holds no database: a ``Journal`` method it does not forward to
    the journal actor would fail at run time (``--report-wrong`` on Ray did)."""
    from capbatch._ray.journal_service import ALLOWED
    from capbatch._ray.remote_journal import RemoteJournal

    public = [n for n in vars(Journal) if not n.startswith("_") and callable(vars(Journal)[n])]
    assert public and [n for n in public if n not in vars(RemoteJournal)] == []
    # ... and the actor serves each of them (``close`` is the actor's own, at the end).
    assert sorted(set(public) - ALLOWED) == ["close"]
