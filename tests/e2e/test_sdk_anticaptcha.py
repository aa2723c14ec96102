"""Anti-Captcha's own Python client as the judge of the emulator's Anti-Captcha dialect.

``python-anticaptcha`` 2.0.0 (the client Anti-Captcha's documentation links for
Python) takes ``host`` and ``use_ssl`` (read from its ``sync_client.AnticaptchaClient``),
so it can be pointed at the emulator. If it creates tasks, polls them, reads their
answers and balances, and reports wrong answers through the dialect exactly as it does
against the real service, the dialect speaks Anti-Captcha's protocol. The SDK sends its
own ``softId`` (847), which the emulator records.

Its ``Job.join`` sleeps ``SLEEP_EVERY_CHECK_FINISHED`` (3 s) between polls; the tests set
it to 0.05 s and cap every join with ``maximum_time``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from python_anticaptcha import AnticaptchaClient, AnticaptchaException, ImageToTextTask, sync_client

from capbatch.emulator import EmulatorHandle

pytestmark = pytest.mark.e2e

KEY = "test-key"


@pytest.fixture
def client_for(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AnticaptchaClient]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(sync_client, "SLEEP_EVERY_CHECK_FINISHED", 0.05)
    made: list[AnticaptchaClient] = []

    def make(handle: EmulatorHandle, key: str = KEY) -> AnticaptchaClient:
        host = urlsplit(handle.url).netloc  # 127.0.0.1:PORT
        client = AnticaptchaClient(key, host=host, use_ssl=False)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def anticaptcha(emulator: Callable[..., EmulatorHandle], **options: object) -> EmulatorHandle:
    return emulator(dialect="anticaptcha", solve_time=(0.05, 0.1), **options)


def test_the_sdk_solves_through_the_dialect(emulator, client_for, labelled_images, labels_csv):
    emu = anticaptcha(emulator, solver="oracle", labels=str(labels_csv))
    client = client_for(emu)
    for image, label in labelled_images[:3]:
        job = client.create_task(ImageToTextTask(image))
        assert isinstance(job.task_id, int)
        job.join(maximum_time=10)
        assert job.get_captcha_text() == label
    stats = emu.stats()
    assert stats["solved"] == 3
    assert stats["developer_ids"] == {"847": 3}  # the SDK's softId, as an integer field


def test_the_sdk_reads_the_balance_and_the_dialects_errors(emulator, client_for, png):
    emu = anticaptcha(emulator, balance=7.25)
    assert client_for(emu).getBalance() == 7.25
    with pytest.raises(AnticaptchaException) as bad_key:
        client_for(emu, key="wrong").create_task(ImageToTextTask(png))
    assert bad_key.value.error_code == "ERROR_KEY_DOES_NOT_EXIST"
    emu.control(balance=0.0)
    with pytest.raises(AnticaptchaException) as no_money:
        client_for(emu).create_task(ImageToTextTask(png))
    assert no_money.value.error_code == "ERROR_ZERO_BALANCE"


def test_the_sdk_sees_an_unsolvable_task_fail(emulator, client_for, png):
    emu = anticaptcha(emulator, unsolvable_rate=1.0)
    job = client_for(emu).create_task(ImageToTextTask(png))
    with pytest.raises(AnticaptchaException) as unsolvable:
        job.join(maximum_time=10)
    assert unsolvable.value.error_code == "ERROR_CAPTCHA_UNSOLVABLE"
    assert emu.stats()["charged_total"] > 0  # Anti-Captcha charges unsolvable tasks


def test_the_sdk_reports_a_wrong_answer_once(emulator, client_for, png):
    emu = anticaptcha(emulator, solver="constant", answer="wrong1")
    job = client_for(emu).create_task(ImageToTextTask(png))
    job.join(maximum_time=10)
    assert job.report_incorrect_image() is True
    with pytest.raises(AnticaptchaException):
        job.report_incorrect_image()  # once per task
    stats = emu.stats()
    assert stats["reports"] == 1 and stats["reports_refused"] == 1
    assert list(stats["reports_by_task"]) == [str(job.task_id)]
