"""SlackNotifier against the Slack recorder on loopback: threads, Block Kit, secrets, retries, and the
NotifyQueue that keeps a Slack outage away from the rollback."""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from rollbackd.errors import BackendError, ConfigError
from rollbackd.notify import Message, ThreadRef
from rollbackd.notify.queue import NotifyQueue
from rollbackd.notify.slack import SlackNotifier
from rollbackd.registry import validate_options
from tests.support.slack_recorder import SlackRecorder, slack_recorder

__all__ = ["slack_recorder"]  # the fixture, used by name

Make = Callable[..., SlackNotifier]
OPENED = Message(
    kind="opened",
    title="Rollback of rag started",
    service="rag",
    incident_id="inc-1",
    text="RAGGateFailRateHigh fired: 9 % of answers fail the gates.",
    severity="warning",
    fields=(
        ("alert", "RAGGateFailRateHigh"),
        ("value", "0.09"),
        ("threshold", "0.07"),
        ("decision", "rollback"),
        ("target", "v1.4.2"),
    ),
)
FINISHED = Message(
    kind="finished",
    title="rag rolled back to v1.4.2",
    service="rag",
    incident_id="inc-1",
    severity="good",
    fields=(("outcome", "rolled_back"),),
)


def step(name: str, incident_id: str = "inc-1") -> Message:
    return Message(kind="step", title=f"{name} done", service="rag", incident_id=incident_id, severity="good")


@pytest.fixture
async def make(slack_recorder: SlackRecorder) -> AsyncIterator[Make]:
    """make(webhook=False, **options): a SlackNotifier on the recorder, closed after the test."""
    made: list[SlackNotifier] = []

    def build(*, webhook: bool = False, **options: Any) -> SlackNotifier:
        base = (
            {"webhook_url": slack_recorder.webhook_url}
            if webhook
            else {"bot_token": slack_recorder.token, "channel": "C1", "base_url": slack_recorder.base_url}
        )
        made.append(SlackNotifier(SlackNotifier.Options.model_validate({**base, **options})))
        return made[-1]

    yield build
    for notifier in made:
        await notifier.close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every asyncio.sleep delay (slack-sdk's handlers and our webhook loop both sleep through it)."""
    real, seen = asyncio.sleep, []

    async def spy(delay: float, *args: Any, **kwargs: Any) -> Any:
        seen.append(delay)
        return await real(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", spy)
    return seen


def statuses(recorder: SlackRecorder) -> list[int]:
    return [r.status for r in recorder.requests]


# ---- bot mode: threads and Block Kit -----------------------------------------------------------
async def test_bot_posts_a_root_threads_replies_and_updates_the_root(make: Make, slack_recorder: SlackRecorder) -> None:
    notifier = make()
    root = await notifier.post(OPENED, None)
    assert root is not None and root["channel"] == "C1"
    for name in ("cut_traffic", "safety_snapshot"):
        assert await notifier.post(step(name), root) == root
    await notifier.update(root, FINISHED)

    assert [r.ts for r in slack_recorder.roots()] == [root["ts"]]
    assert [r.text for r in slack_recorder.thread(root["ts"])] == [
        ":white_check_mark: cut_traffic done",
        ":white_check_mark: safety_snapshot done",
    ]
    (update,) = slack_recorder.updates(root["ts"])
    assert update.blocks[0]["text"]["text"] == ":white_check_mark: rag rolled back to v1.4.2"


async def test_blocks_carry_title_text_fields_and_context(make: Make, slack_recorder: SlackRecorder) -> None:
    await make().post(OPENED, None)
    (message,) = slack_recorder.messages()
    header, text, fields, context = message.blocks
    assert header["type"] == "header" and header["text"]["text"] == ":warning: Rollback of rag started"
    assert text["text"]["text"] == "RAGGateFailRateHigh fired: 9 % of answers fail the gates."
    assert [f["text"] for f in fields["fields"]] == [
        "*alert*\nRAGGateFailRateHigh",
        "*value*\n0.09",
        "*threshold*\n0.07",
        "*decision*\nrollback",
        "*target*\nv1.4.2",
    ]
    assert context["elements"][0]["text"] == "service: *rag*  ·  incident: *inc-1*"
    assert message.text == f":warning: Rollback of rag started\n{OPENED.text}"


async def test_escalation_mentions_in_the_text_and_user_text_cannot_ping(
    make: Make, slack_recorder: SlackRecorder
) -> None:
    notifier = make(mention_on_escalation="<!subteam^S0123>")
    await notifier.post(
        Message(kind="escalation", title="verify failed", text="error <!channel> & co", severity="danger"), None
    )
    await notifier.post(Message(kind="step", title="redeploy done"), None)
    escalation, plain = slack_recorder.messages()
    assert escalation.text == "<!subteam^S0123> :rotating_light: verify failed\nerror &lt;!channel&gt; &amp; co"
    assert escalation.blocks[1]["text"]["text"] == "<!subteam^S0123> error &lt;!channel&gt; &amp; co"
    assert "<!subteam" not in str(plain.body)


# ---- secrets -----------------------------------------------------------------------------------
async def test_token_is_sent_as_bearer_and_never_leaks(
    make: Make, slack_recorder: SlackRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await make().post(OPENED, None)
    assert slack_recorder.requests[0].token == slack_recorder.token

    wrong = "xoxb-wrong-token-9999-never-print"
    with pytest.raises(BackendError) as caught:
        await make(bot_token=wrong).post(OPENED, None)
    assert str(caught.value) == "slack: chat.postMessage: invalid_auth"
    slack_recorder.set_down(True)
    with pytest.raises(BackendError) as down:
        await make(bot_token=wrong, max_retries=0).post(OPENED, None)
    for exc in (caught.value, down.value):
        assert wrong not in "".join(traceback.format_exception(exc)) + repr(exc)
    assert wrong not in caplog.text and slack_recorder.token not in caplog.text
    assert wrong not in repr(SlackNotifier.Options(bot_token=wrong, channel="C1"))


async def test_webhook_url_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-webhook-path-0000"
    async with SlackRecorder(webhook_path=f"/services/T000/B000/{secret}") as recorder:
        notifier = SlackNotifier(SlackNotifier.Options(webhook_url=recorder.webhook_url, max_retries=1))
        try:
            await notifier.post(OPENED, None)
            recorder.fail_next(2, status=500)
            with pytest.raises(BackendError) as failed:
                await notifier.post(OPENED, None)
            recorder.set_down(True)
            with pytest.raises(BackendError) as down:
                await notifier.post(OPENED, None)
        finally:
            await notifier.close()
        assert str(failed.value) == "slack: webhook: HTTP 500 internal_error"
        for exc in (failed.value, down.value):
            assert secret not in "".join(traceback.format_exception(exc)) + repr(exc)
        assert secret not in caplog.text
        with pytest.raises(ConfigError) as bad:
            validate_options(SlackNotifier, {"webhook_url": recorder.webhook_url, "bot_token": "x"}, "notify")
        assert secret not in "".join(traceback.format_exception(bad.value))


# ---- retries -----------------------------------------------------------------------------------
async def test_rate_limited_call_is_retried_after_retry_after(
    make: Make, slack_recorder: SlackRecorder, sleeps: list[float]
) -> None:
    slack_recorder.fail_next(1, status=429, retry_after=2)
    assert await make().post(OPENED, None) is not None
    assert statuses(slack_recorder) == [429, 200]
    assert max(sleeps) >= 2  # slack-sdk waited Retry-After (plus jitter), more than any backoff here


async def test_server_error_is_retried(make: Make, slack_recorder: SlackRecorder) -> None:
    slack_recorder.fail_next(2, status=500)
    assert await make(max_retries=2).post(step("cut_traffic"), {"channel": "C1", "ts": "1.1"}) is not None
    assert statuses(slack_recorder) == [500, 500, 200]


# ---- an incident's root: one per incident, whatever the far end does -----------------------------
def methods(recorder: SlackRecorder) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in recorder.requests]


async def test_a_root_whose_answer_was_lost_is_found_not_posted_again(
    make: Make, slack_recorder: SlackRecorder
) -> None:
    """Slack posted the root but answered 500 (or the connection dropped after it): slack-sdk's retry
    would post a second root and split the incident's thread. The root carries its incident id as
    message metadata; the history finds it, and its reference is the answer."""
    slack_recorder.fail_next(1, status=500, landed=True)
    ref = await make(max_retries=2).post(OPENED, None)
    (root,) = slack_recorder.roots()
    assert ref == {"channel": "C1", "ts": root.ts} and not root.answered
    assert root.body["metadata"] == {"event_type": "rollbackd_incident", "event_payload": {"incident_id": "inc-1"}}
    assert methods(slack_recorder) == [("chat.postMessage", 200), ("conversations.history", 200)]


async def test_a_root_that_did_not_land_is_posted_again_after_the_history_says_so(
    make: Make, slack_recorder: SlackRecorder
) -> None:
    slack_recorder.fail_next(1, status=503)
    ref = await make(max_retries=2).post(OPENED, None)
    (root,) = slack_recorder.roots()
    assert ref == {"channel": "C1", "ts": root.ts}
    assert methods(slack_recorder) == [
        ("chat.postMessage", 503),
        ("conversations.history", 200),
        ("chat.postMessage", 200),
    ]


async def test_a_root_is_not_posted_again_while_the_history_cannot_tell(
    make: Make, slack_recorder: SlackRecorder
) -> None:
    """The search fails too (Slack still failing, or no channels:history scope): the root may have
    landed, so the failure stands and the queue tries later (find first); nothing is posted twice."""
    slack_recorder.fail_next(2, status=500)
    with pytest.raises(BackendError, match="HTTP 500"):
        await make(max_retries=2).post(OPENED, None)
    assert methods(slack_recorder) == [("chat.postMessage", 500), ("conversations.history", 500)]
    slack_recorder.reset()
    slack_recorder.history_scope = False
    notifier = make(max_retries=2)
    assert await notifier.find(OPENED) is None  # find says "none known", and logs why
    slack_recorder.fail_next(1, status=500, landed=True)
    with pytest.raises(BackendError, match="HTTP 500"):
        await notifier.post(OPENED, None)
    assert len(slack_recorder.roots()) == 1


async def test_a_rate_limited_root_is_retried_without_a_search(
    make: Make, slack_recorder: SlackRecorder, sleeps: list[float]
) -> None:
    slack_recorder.fail_next(1, status=429, retry_after=2)  # a 429 posted nothing: no history to ask
    assert await make().post(OPENED, None) is not None
    assert methods(slack_recorder) == [("chat.postMessage", 429), ("chat.postMessage", 200)]
    assert 2 in sleeps


async def test_webhook_server_error_is_retried_by_our_loop(make: Make, slack_recorder: SlackRecorder) -> None:
    slack_recorder.fail_next(2, status=500)
    assert await make(webhook=True, max_retries=2).post(OPENED, None) is None
    assert statuses(slack_recorder) == [500, 500, 200]


async def test_webhook_rate_limit_honours_retry_after(
    make: Make, slack_recorder: SlackRecorder, sleeps: list[float]
) -> None:
    slack_recorder.fail_next(1, status=429, retry_after=1)
    await make(webhook=True).post(OPENED, None)
    assert statuses(slack_recorder) == [429, 200]
    assert 1.0 in sleeps


@pytest.mark.parametrize("webhook", [False, True], ids=["bot", "webhook"])
@pytest.mark.parametrize("status", [500, 429])
async def test_retries_are_bounded(make: Make, slack_recorder: SlackRecorder, webhook: bool, status: int) -> None:
    slack_recorder.fail_next(10, status=status, retry_after=0)
    with pytest.raises(BackendError) as caught:
        await make(webhook=webhook, max_retries=2).post(step("cut_traffic"), {"channel": "C1", "ts": "1.1"})
    assert statuses(slack_recorder) == [status] * 3
    assert caught.value.retryable and f"HTTP {status}" in str(caught.value)


async def test_client_errors_are_not_retried(make: Make, slack_recorder: SlackRecorder) -> None:
    slack_recorder.fail_next(1, status=200, error="channel_not_found")
    with pytest.raises(BackendError, match=r"^slack: chat.postMessage: channel_not_found$") as caught:
        await make().post(OPENED, None)
    assert not caught.value.retryable
    with pytest.raises(BackendError, match=r"^slack: webhook: HTTP 404 no_service$"):
        await make(webhook_url=slack_recorder.webhook_url + "-gone", webhook=True).post(OPENED, None)
    assert statuses(slack_recorder) == [200, 404]


# ---- webhook mode and options ------------------------------------------------------------------
async def test_webhook_mode_has_no_threads(make: Make, slack_recorder: SlackRecorder) -> None:
    notifier = make(webhook=True)
    assert await notifier.post(OPENED, None) is None
    assert await notifier.post(step("cut_traffic"), {"channel": "C1", "ts": "1.1"}) is None
    await notifier.update({"channel": "C1", "ts": "1.1"}, FINISHED)  # documented no-op
    assert [r.method for r in slack_recorder.requests] == ["webhook", "webhook"]
    assert [r.thread_ts for r in slack_recorder.messages()] == [None, None]


@pytest.mark.parametrize("options", [{}, {"bot_token": "xoxb-1", "channel": "C1", "webhook_url": "https://h/x"}])
def test_exactly_one_of_bot_token_and_webhook_url(options: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=r"bot_token.*webhook_url") as caught:
        SlackNotifier.Options.model_validate(options)
    assert "xoxb-1" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"bot_token": "xoxb-1"}, "bot_token needs channel"),
        ({"webhook_url": "https://h/x", "channel": "C1"}, "apply to bot_token only"),
        ({"webhook_url": "hooks.slack.com/x"}, "http(s) URL"),
        ({"bot_token": "xoxb-1", "channel": "C1", "colour": "red"}, "notify.colour: Extra inputs"),
    ],
)
def test_invalid_options_name_the_problem(options: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_options(SlackNotifier, options, "notify")
    assert problem in str(caught.value)


# ---- behind the NotifyQueue --------------------------------------------------------------------
async def test_queue_absorbs_a_slack_outage(
    make: Make, slack_recorder: SlackRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[str] = []
    queue = NotifyQueue({}, default=make(max_retries=1), on_failure=failures.append)
    queue.start()
    slack_recorder.set_down(True)

    async def runner() -> str:  # the daemon's side: hand over and go on
        queue.opened(OPENED)
        for name in ("cut_traffic", "safety_snapshot", "restore_aside"):
            await asyncio.sleep(0)
            queue.reply(step(name))
        queue.update_root(FINISHED)
        return "rolled back"

    assert await asyncio.wait_for(runner(), timeout=10) == "rolled back"
    await asyncio.wait_for(queue.drain(timeout=60), timeout=90)
    assert failures == ["slack"] * 5 and slack_recorder.messages() == []
    assert [r.message for r in caplog.records].count("notify_failed") == 5

    slack_recorder.set_down(False)
    queue.reply(step("verify"))
    await queue.drain(timeout=30)
    await queue.stop()
    # the incident's next message brings its lost root first, and threads under it
    (root,) = slack_recorder.roots()
    assert "Rollback of rag started" in (root.text or "")
    assert [r.text for r in slack_recorder.thread(root.ts or "")] == [":white_check_mark: verify done"]


async def test_full_queue_drops_and_counts(
    make: Make, slack_recorder: SlackRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    queue = NotifyQueue({}, default=make(), maxsize=2)  # not started: nothing drains it yet
    queue.opened(OPENED)
    for name in ("cut_traffic", "safety_snapshot", "restore_aside", "swap_data"):
        queue.reply(step(name))
    assert queue.dropped == 3
    assert [r.message for r in caplog.records].count("notify_dropped") == 3
    queue.start()
    await queue.drain(timeout=30)
    await queue.stop()
    assert [r.text for r in slack_recorder.messages()] == [
        f":warning: Rollback of rag started\n{OPENED.text}",
        ":white_check_mark: cut_traffic done",
    ]


async def test_thread_survives_a_restart(make: Make, slack_recorder: SlackRecorder) -> None:
    store: dict[str, ThreadRef] = {}

    async def save(incident_id: str, ref: ThreadRef) -> None:
        store[incident_id] = dict(ref)

    async def load(incident_id: str) -> ThreadRef | None:
        return store.get(incident_id)

    before = NotifyQueue({}, default=make(), save_thread=save, load_thread=load)
    before.start()
    before.opened(OPENED)
    await before.drain(timeout=30)
    await before.stop()
    assert store["inc-1"]["ts"] == slack_recorder.roots()[0].ts

    after = NotifyQueue({}, default=make(), save_thread=save, load_thread=load)  # a new process
    after.start()
    after.reply(step("redeploy"))
    after.update_root(FINISHED)
    await after.drain(timeout=30)
    await after.stop()
    root_ts = store["inc-1"]["ts"]
    assert [r.text for r in slack_recorder.thread(root_ts)] == [
        ":white_check_mark: redeploy done",
        ":white_check_mark: rag rolled back to v1.4.2",
    ]
    assert len(slack_recorder.updates(root_ts)) == 1 and len(slack_recorder.roots()) == 1


# ---- the recorder, as end-to-end tests use it ---------------------------------------------------
def test_recorder_waits_from_a_sync_test() -> None:
    async def client(recorder: SlackRecorder) -> None:
        notifier = SlackNotifier(SlackNotifier.Options(webhook_url=recorder.webhook_url))
        try:
            await notifier.post(OPENED, None)
        finally:
            await notifier.close()

    with SlackRecorder() as recorder:
        thread = threading.Thread(target=asyncio.run, args=(client(recorder),))
        thread.start()
        recorder.wait_for(lambda r: len(r.messages()) == 1, timeout=30)
        thread.join(30)
        with pytest.raises(TimeoutError):
            recorder.wait_for(lambda r: len(r.messages()) == 2, timeout=0.1)


async def test_recorder_waits_from_an_async_test(make: Make, slack_recorder: SlackRecorder) -> None:
    queue = NotifyQueue({}, default=make())
    queue.start()
    queue.opened(OPENED)
    queue.reply(step("cut_traffic"))
    await slack_recorder.wait_for_async(lambda r: len(r.thread(r.roots()[0].ts) if r.roots() else []) == 1)
    await queue.stop()
    (root,) = slack_recorder.roots()
    (reply,) = slack_recorder.thread(root.ts)
    assert reply.text is not None and "cut_traffic" in reply.text


async def test_a_search_takes_no_shape_of_anothers_metadata_on_trust(make: Make, slack_recorder: SlackRecorder) -> None:
    """Anyone may post message metadata to the channel: odd shapes (and the same event type from someone
    else, for another incident) are passed over, never a crash; the real root is still found."""
    from slack_sdk.web.async_client import AsyncWebClient

    other = AsyncWebClient(token=slack_recorder.token, base_url=slack_recorder.base_url)
    notifier = make()
    root = await notifier.post(OPENED, None)
    odd: list[Any] = [
        {"event_type": "rollbackd_incident", "event_payload": "inc-1"},
        {"event_type": "rollbackd_incident", "event_payload": {"incident_id": "inc-other"}},
        {"event_type": "something_else", "event_payload": {"incident_id": "inc-1"}},
        {"event_type": ["rollbackd_incident"], "event_payload": {}},
    ]
    for metadata in odd:
        await other.chat_postMessage(channel="C1", text="not a root", metadata=metadata)
    assert await notifier.find(OPENED) == root
    assert await notifier.find(step("x", incident_id="inc-none")) is None
