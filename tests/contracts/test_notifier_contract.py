"""The Notifier contract: every backend (null included) subclasses NotifierContract and provides three
fixtures: ``notifier`` (a fresh instance, closed afterwards), ``rendered`` (the text of what the backend
delivered last, as a human would read it) and ``break_backend`` (make the backend's far end fail)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from rollbackd.errors import BackendError
from rollbackd.notify import Message, Notifier, ThreadRef
from rollbackd.notify.null import NullNotifier
from rollbackd.notify.slack import SlackNotifier
from tests.support.slack_recorder import SlackRecorder

FIELDS = (
    ("alert", "RAGGateFailRateHigh"),
    ("value", "0.09"),
    ("threshold", "0.07"),
    ("decision", "rollback"),
    ("target", "release 2024-05-01 (v1.4.2)"),
    ("from", "v1.5.0"),
    ("snapshot", "snap-20240501-1800"),
    ("step", "restore_aside"),
    ("duration", "12.4 s"),
    ("reason", "gate failures above threshold"),
    ("budget", "2 of 3 left"),
    ("cooldown", "none"),
)
EVERYTHING = Message(
    kind="escalation",
    title="Rollback of rag stopped at verify",
    service="rag",
    incident_id="inc-20240501-0300",
    text="Verification failed: ragas_quick faithfulness 0.61 below 0.80. Rollback stopped; nobody retries.",
    fields=FIELDS,
    severity="danger",
    mention="<!subteam^S0123>",
)
UNICODE = "Ünïcödé ✓ 漢字 العربية 👩‍👩‍👧 🚀 e\u0301 "
LONG = Message(
    kind="step",
    title=UNICODE * 20,  # far over a header's 150
    service="rag",
    incident_id="inc-long",
    text=(UNICODE * 300)[:2999] + "🚀" * 600,  # > 3000 characters, a surrogate pair across every cut
    fields=tuple((f"field {i} {UNICODE}", UNICODE * 120) for i in range(45)),
    severity="warning",
)


def opened(incident_id: str = "inc-1") -> Message:
    return Message(
        kind="opened",
        title="Rollback started",
        service="rag",
        incident_id=incident_id,
        fields=(("alert", "RAGGateFailRateHigh"),),
        severity="warning",
    )


def step(name: str) -> Message:
    return Message(kind="step", title=f"{name} done", service="rag", incident_id="inc-1", severity="good")


def is_ref(ref: object) -> bool:
    return ref is None or (
        isinstance(ref, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in ref.items())
    )


class NotifierContract:
    async def test_post_returns_a_ref_or_none(self, notifier: Notifier) -> None:
        assert is_ref(await notifier.post(opened(), None))

    async def test_threads_says_whether_a_root_post_returns_a_ref(self, notifier: Notifier) -> None:
        # the queue re-posts a lost root only where a thread can exist (rollbackd.notify.queue)
        assert notifier.threads is ((await notifier.post(opened(), None)) is not None)

    async def test_find_knows_the_root_posted_for_an_incident_and_no_other(self, notifier: Notifier) -> None:
        # the queue asks before it posts a root again (rollbackd.notify.queue): a backend that threads and
        # can look finds the very root it posted; one that cannot says None, never another thread
        root = await notifier.post(opened("inc-find"), None)
        assert await notifier.find(opened("inc-find")) in (None, root)
        assert await notifier.find(opened("inc-never-posted")) is None
        assert await notifier.find(Message(kind="opened", title="no incident")) is None

    async def test_post_in_thread(self, notifier: Notifier, rendered: Callable[[], str]) -> None:
        root = await notifier.post(opened(), None)
        reply = await notifier.post(step("cut_traffic"), root)
        assert is_ref(reply)
        if root is not None and reply is not None:
            assert reply == root  # replies thread under the root, never under a reply
        assert "cut_traffic done" in rendered()

    async def test_update(
        self, notifier: Notifier, rendered: Callable[[], str], updated: Callable[[], str | None]
    ) -> None:
        root = await notifier.post(opened(), None)
        thread: ThreadRef = root if root is not None else {}
        await notifier.update(thread, Message(kind="finished", title="Rolled back", incident_id="inc-1"))
        text = updated()
        if text is None:  # the backend cannot edit a message: then it posts nothing new either
            assert "Rolled back" not in rendered() and "Rollback started" in rendered()
        else:
            assert "Rolled back" in text

    async def test_close_is_idempotent(self, notifier: Notifier, rendered: Callable[[], str]) -> None:
        assert await notifier.close() is None  # before any use
        await notifier.post(opened(), None)
        assert "Rollback started" in rendered()
        await notifier.close()
        await notifier.close()
        assert "Rollback started" in rendered()  # closing posted nothing

    async def test_message_with_every_field_renders(self, notifier: Notifier, rendered: Callable[[], str]) -> None:
        await notifier.post(EVERYTHING, None)
        text = rendered()
        expected = [EVERYTHING.title, "rag", "inc-20240501-0300", "<!subteam^S0123>", "faithfulness 0.61"]
        for part in [*expected, *(k for k, _ in FIELDS), *(v for _, v in FIELDS)]:
            assert part in text, part

    async def test_unicode_and_long_text_do_not_fail(self, notifier: Notifier, rendered: Callable[[], str]) -> None:
        ref = await notifier.post(LONG, None)
        await notifier.post(LONG, ref)
        if ref is not None:
            await notifier.update(ref, LONG)
        text = rendered()
        assert UNICODE[:12] in text
        text.encode("utf-8")  # no lone surrogate left by a cut

    async def test_find_raises_only_backend_error(self, notifier: Notifier, break_backend: Callable[[], None]) -> None:
        break_backend()
        try:
            assert await notifier.find(opened("inc-find")) is None
        except BackendError as exc:
            assert exc.backend == notifier.name and exc.retryable  # "cannot tell now", never "cannot look"

    async def test_post_raises_only_backend_error(self, notifier: Notifier, break_backend: Callable[[], None]) -> None:
        break_backend()
        for message in (opened(), EVERYTHING):
            try:
                await notifier.post(message, {"channel": "C1", "ts": "1700000000.000001"})
            except BackendError as exc:
                assert exc.backend == notifier.name


# ---- the backends ------------------------------------------------------------------------------
class TestNullNotifier(NotifierContract):
    @pytest.fixture
    async def notifier(self) -> AsyncIterator[NullNotifier]:
        notifier = NullNotifier()
        yield notifier
        await notifier.close()

    @pytest.fixture
    def rendered(self, notifier: NullNotifier) -> Callable[[], str]:
        return lambda: repr(notifier.posted[-1])

    @pytest.fixture
    def break_backend(self) -> Callable[[], None]:
        return lambda: None  # nothing to break

    @pytest.fixture
    def updated(self, notifier: NullNotifier) -> Callable[[], str | None]:
        return lambda: repr(notifier.posted[-1])  # the null notifier records an update like a post


class SlackContract(NotifierContract):
    @pytest.fixture
    def recorder(self) -> Iterator[SlackRecorder]:
        with SlackRecorder() as recorder:
            yield recorder

    @pytest.fixture
    def rendered(self, recorder: SlackRecorder) -> Callable[[], str]:
        def last() -> str:
            body = recorder.messages()[-1].body
            parts = [body.get("text", ""), json.dumps(body.get("blocks"), ensure_ascii=False)]
            return "\n".join(parts).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")

        return last

    @pytest.fixture
    def break_backend(self, recorder: SlackRecorder) -> Callable[[], None]:
        return lambda: recorder.set_down(True)


class TestSlackBotNotifier(SlackContract):
    async def test_find_reads_the_root_back_from_the_history(self, notifier: SlackNotifier) -> None:
        root = await notifier.post(opened("inc-find"), None)
        await notifier.post(step("restore"), root)
        await notifier.post(opened("inc-other"), None)
        assert root is not None and await notifier.find(opened("inc-find")) == root

    async def test_find_reads_past_a_storms_messages_posted_after_the_root(self, notifier: SlackNotifier) -> None:
        root = await notifier.post(opened("inc-deep"), None)
        for n in range(450):  # top-level messages after the root: three pages of 200 back
            await notifier.post(Message(kind="decision", title=f"noise {n}", service="rag"), None)
        assert root is not None and await notifier.find(opened("inc-deep")) == root
        assert await notifier.find(opened("inc-never-posted")) is None  # every page read, then none

    @pytest.fixture
    def updated(self, recorder: SlackRecorder) -> Callable[[], str | None]:
        def last() -> str | None:
            (update,) = recorder.updates()
            return json.dumps(update.body, ensure_ascii=False)

        return last

    @pytest.fixture
    async def notifier(self, recorder: SlackRecorder) -> AsyncIterator[SlackNotifier]:
        options = {"bot_token": recorder.token, "channel": "C1", "base_url": recorder.base_url, "max_retries": 1}
        notifier = SlackNotifier(SlackNotifier.Options.model_validate(options))
        yield notifier
        await notifier.close()


class TestSlackWebhookNotifier(SlackContract):
    @pytest.fixture
    def updated(self, recorder: SlackRecorder) -> Callable[[], str | None]:
        def none() -> None:
            assert recorder.updates() == []  # an incoming webhook cannot edit: no call is made
            return None

        return none

    @pytest.fixture
    async def notifier(self, recorder: SlackRecorder) -> AsyncIterator[SlackNotifier]:
        options = {"webhook_url": recorder.webhook_url, "max_retries": 1}
        notifier = SlackNotifier(SlackNotifier.Options.model_validate(options))
        yield notifier
        await notifier.close()
