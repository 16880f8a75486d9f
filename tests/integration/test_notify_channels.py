"""A Slack that answers 429 with a long Retry-After: the wait is capped in the notifier (a longer one is
not slept inline), the channel backs off on its own, another channel is not delayed, and shutdown does
not wait for it. Two Slack recorders on loopback stand for two workspaces."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rollbackd.errors import BackendError
from rollbackd.notify import Message
from rollbackd.notify.queue import NotifyQueue
from rollbackd.notify.slack import SlackNotifier
from tests.support.slack_recorder import SlackRecorder


def msg(service: str, title: str) -> Message:
    return Message(kind="decision", title=title, service=service, severity="warning")


def bot(recorder: SlackRecorder, **options: Any) -> SlackNotifier:
    return SlackNotifier(
        SlackNotifier.Options.model_validate(
            {"bot_token": recorder.token, "channel": "C1", "base_url": recorder.base_url, **options}
        )
    )


@pytest.fixture
async def two() -> AsyncIterator[tuple[SlackRecorder, SlackRecorder]]:
    async with SlackRecorder() as limited, SlackRecorder() as healthy:
        yield limited, healthy


@pytest.mark.parametrize("webhook", [False, True], ids=["bot", "webhook"])
async def test_a_retry_after_past_the_cap_is_not_slept_inline(webhook: bool) -> None:
    async with SlackRecorder() as slack:
        options = (
            {"webhook_url": slack.webhook_url}
            if webhook
            else {"bot_token": slack.token, "channel": "C1", "base_url": slack.base_url}
        )
        notifier = SlackNotifier(SlackNotifier.Options.model_validate({**options, "retry_after_max": 2}))
        slack.fail_next(5, status=429, retry_after=3600)
        began = time.monotonic()
        try:
            with pytest.raises(BackendError) as caught:
                await notifier.post(msg("rag", "rate limited"), None)
        finally:
            await notifier.close()
        assert time.monotonic() - began < 10  # liveness: not the hour Slack asked for
        assert caught.value.retryable and caught.value.retry_after == 3600
        assert [r.status for r in slack.requests] == [429]


async def test_one_rate_limited_channel_delays_neither_the_others_nor_shutdown(
    two: tuple[SlackRecorder, SlackRecorder],
) -> None:
    limited, healthy = two
    queue = NotifyQueue({"rag": bot(limited), "search": bot(healthy)}, default=bot(healthy), backoff_max=3600)
    queue.start()
    limited.fail_next(10, status=429, retry_after=3600)
    queue.post(msg("rag", "first"))
    queue.post(msg("rag", "second"))  # waits behind the channel's backoff
    await limited.wait_for_async(lambda r: len(r.requests) == 1)
    for n in range(3):
        queue.post(msg("search", f"search {n}"))
    await healthy.wait_for_async(lambda r: len(r.messages()) == 3, timeout=10)
    assert [r.status for r in limited.requests] == [429]  # no inline retry, no second send: backing off
    began = time.monotonic()
    await queue.stop(timeout=30)
    assert time.monotonic() - began < 5  # the channel in backoff is not waited for
    assert [r.status for r in limited.requests] == [429]


async def test_a_short_retry_after_backs_the_channel_off_then_it_goes_on(
    two: tuple[SlackRecorder, SlackRecorder],
) -> None:
    limited, _ = two
    queue = NotifyQueue({}, default=bot(limited, retry_after_max=1), backoff_max=60)
    queue.start()
    limited.fail_next(1, status=429, retry_after=2)  # past the notifier's cap: the channel waits 2 s
    queue.post(msg("rag", "dropped after the 429"))
    queue.post(msg("rag", "sent after the backoff"))
    await limited.wait_for_async(lambda r: len(r.messages()) == 1, timeout=15)
    first, second = limited.requests
    assert first.status == 429 and second.status == 200 and second.at - first.at >= 1.9
    await queue.stop()
