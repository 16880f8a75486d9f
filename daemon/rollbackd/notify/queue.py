"""Bounded queues between the runner and the notifiers: the runner never waits for Slack, and each
notifier (channel) has its own queue and worker, so one that is slow or rate-limited never delays
another, nor the daemon's shutdown (a channel in backoff is not waited for).

Root messages create a thread whose reference is kept on the incident (so replies after a restart
land in the same thread). A root that could not be posted (Slack down at the time) is posted late,
before the incident's next message; after a restart, the runner hands the incident's root with its
"resumed" note, so an incident whose thread was never journaled (the process died before) still
gets one thread, and its outcome edits that root. A late root is first looked for at the far end
(``Notifier.find``): when the first one landed after all, the incident keeps that one.

Each channel has two queues: an incident's own messages (root, replies, outcome) go before any
other (decisions of an alert storm, coalesced suppressions), and each queue has its own bound, so a
storm never fills the room an incident's messages need. When a queue is full the new message is
dropped, counted (by priority) and logged: a notifier outage must never hold up or fail a rollback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from rollbackd import redact
from rollbackd.errors import RollbackdError
from rollbackd.notify import Message, Notifier, ThreadRef

log = logging.getLogger(__name__)

ThreadSaver = Callable[[str, ThreadRef], Awaitable[None]]
ThreadLoader = Callable[[str], Awaitable[ThreadRef | None]]


Priority = Literal["incident", "other"]


@dataclass(frozen=True, slots=True)
class _Item:
    op: Literal["root", "reply", "update", "plain"]
    service: str | None
    message: Message
    root: Message | None = None  # the thread's root, to post first when no thread is known yet

    @property
    def priority(self) -> Priority:
        return "incident" if self.op != "plain" or self.message.incident_id is not None else "other"


class _Channel:
    """One notifier's own queue and worker: a slow or rate-limited Slack workspace never holds up
    another notifier. After a failed send the channel waits before its next one (the far end's
    Retry-After, else a doubling backoff), capped at ``backoff_max``."""

    def __init__(self, notifier: Notifier, maxsize: int, backoff_max: float) -> None:
        self.notifier = notifier
        self.maxsize = maxsize
        self.queues: dict[Priority, deque[_Item]] = {"incident": deque(), "other": deque()}
        self.ready = asyncio.Event()
        self.backoff_max = backoff_max
        self.backing_off = False
        self.task: asyncio.Task[None] | None = None
        self.pending = 0  # queued or being sent
        self._failures = 0

    def pause_after(self, exc: Exception | None) -> float:
        if exc is None:
            self._failures = 0
            return 0.0
        self._failures += 1
        asked = getattr(exc, "retry_after", None)
        wait = float(asked) if asked is not None else _BACKOFF_FIRST_S * 2 ** (self._failures - 1)
        return min(wait, self.backoff_max)

    def idle(self) -> bool:
        return self.pending == 0

    def put(self, item: _Item) -> bool:
        queue = self.queues[item.priority]
        if len(queue) >= self.maxsize:
            return False
        queue.append(item)
        self.pending += 1
        self.ready.set()
        return True

    async def get(self) -> _Item:
        """The oldest incident message, else the oldest other one."""
        while True:
            for queue in self.queues.values():
                if queue:
                    return queue.popleft()
            self.ready.clear()
            await self.ready.wait()


_BACKOFF_FIRST_S = 0.2


def _redacted(message: Message) -> Message:
    return dataclasses.replace(
        message,
        title=redact.text(message.title, 300),
        text=redact.text(message.text, 8000),
        fields=tuple((k, redact.text(v, 500)) for k, v in message.fields),
    )


class NotifyQueue:
    def __init__(
        self,
        notifiers: Mapping[str, Notifier],
        *,
        default: Notifier,
        maxsize: int = 1000,
        save_thread: ThreadSaver | None = None,
        load_thread: ThreadLoader | None = None,
        on_failure: Callable[[str], None] | None = None,
        on_drop: Callable[[Priority], None] | None = None,
        backoff_max: float = 300.0,
    ) -> None:
        self._notifiers = dict(notifiers)
        self._default = default
        self._channels: dict[int, _Channel] = {
            id(n): _Channel(n, maxsize, backoff_max) for n in [*self._notifiers.values(), default]
        }
        self._threads: dict[str, ThreadRef] = {}
        self._roots: dict[str, Message] = {}  # roots queued or failed, not posted yet, by incident
        self._save_thread = save_thread
        self._load_thread = load_thread
        self._on_failure = on_failure or (lambda name: None)
        self._on_drop = on_drop or (lambda priority: None)
        self.dropped = 0

    # ---- what the runner calls (never blocks) ---------------------------------------------------
    def opened(self, message: Message) -> None:
        self._put(_Item("root", message.service, message))

    def reply(self, message: Message, *, root: Message | None = None) -> None:
        """A message in the incident's thread; ``root`` starts that thread if none is known."""
        self._put(_Item("reply", message.service, message, root))

    def update_root(self, message: Message) -> None:
        self._put(_Item("update", message.service, message))

    def post(self, message: Message) -> None:
        self._put(_Item("plain", message.service, message))

    def _put(self, item: _Item) -> None:
        # one sink for every notifier
        item = dataclasses.replace(
            item, message=_redacted(item.message), root=_redacted(item.root) if item.root else None
        )
        if item.op == "root" and item.message.incident_id:
            self._roots[item.message.incident_id] = item.message
        if not self._channel(item.service).put(item):
            self.dropped += 1
            self._on_drop(item.priority)
            log.warning(
                "notify_dropped",
                extra={"incident_id": item.message.incident_id, "kind": item.message.kind, "priority": item.priority},
            )

    # ---- the workers ----------------------------------------------------------------------------
    def start(self) -> None:
        for channel in self._channels.values():
            if channel.task is None:
                name = f"rollbackd-notify-{channel.notifier.name}"
                channel.task = asyncio.create_task(self._work(channel), name=name)

    async def drain(self, timeout: float = 10.0, *, skip_backing_off: bool = False) -> None:
        """Wait until everything queued was sent (or tried), at most ``timeout`` seconds; with
        ``skip_backing_off`` a channel waiting out a backoff is not waited for (shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(c.idle() or (skip_backing_off and c.backing_off) for c in self._channels.values()):
                return
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 5.0) -> None:
        await self.drain(timeout, skip_backing_off=True)
        for channel in self._channels.values():
            if channel.task is not None:
                channel.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await channel.task
                channel.task = None
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.notifier.close()

    async def _work(self, channel: _Channel) -> None:
        while True:
            item = await channel.get()
            failure: Exception | None = None
            try:
                await self._send(channel.notifier, item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a notifier must never take the daemon down
                failure = exc
                self._failed(channel.notifier, item, exc)
            finally:
                channel.pending -= 1
            pause = channel.pause_after(failure)
            if pause > 0:
                channel.backing_off = True
                log.info("notify_backoff", extra={"notifier": channel.notifier.name, "wait_s": round(pause, 2)})
                try:
                    await asyncio.sleep(pause)
                finally:
                    channel.backing_off = False

    def _failed(self, notifier: Notifier, item: _Item, exc: Exception) -> None:
        self._on_failure(notifier.name)
        expected = isinstance(exc, RollbackdError)  # anything else is a bug: keep its traceback
        log.warning(
            "notify_failed",
            exc_info=None if expected else exc,
            extra={
                "notifier": notifier.name,
                "incident_id": item.message.incident_id,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )

    def _notifier(self, service: str | None) -> Notifier:
        return self._notifiers.get(service or "", self._default)

    def _channel(self, service: str | None) -> _Channel:
        return self._channels[id(self._notifier(service))]

    async def _thread(self, incident_id: str | None) -> ThreadRef | None:
        if incident_id is None:
            return None
        if incident_id not in self._threads and self._load_thread is not None:
            ref = await self._load_thread(incident_id)
            if ref:
                self._threads[incident_id] = ref
        return self._threads.get(incident_id)

    async def _send(self, notifier: Notifier, item: _Item) -> None:
        incident_id = item.message.incident_id
        if item.op == "root":
            if incident_id is None or incident_id in self._roots:  # else posted late already
                await self._post_root(notifier, item.message)
            return
        thread = await self._thread(incident_id) if item.op != "plain" else None
        if thread is None and incident_id is not None and item.op != "plain" and notifier.threads:
            root = self._roots.get(incident_id) or item.root
            if root is not None:  # the thread's root was lost (failed, or queued by a process that died)
                thread = await self._post_root(notifier, root, late=True)
        if item.op == "update":
            self._roots.pop(incident_id or "", None)  # the outcome: the incident's last message
            if thread is not None:
                await notifier.update(thread, item.message)
            await notifier.post(item.message, thread)  # the outcome also lands in the thread
            return
        await notifier.post(item.message, thread)

    async def _post_root(self, notifier: Notifier, root: Message, *, late: bool = False) -> ThreadRef | None:
        # late: it may have landed after all (its answer, or the process that journals it, was lost)
        ref = (await notifier.find(root) if late else None) or await notifier.post(root, None)
        incident_id = root.incident_id
        if incident_id is None:
            return ref
        self._roots.pop(incident_id, None)
        if ref:
            self._threads[incident_id] = ref
            if self._save_thread is not None:
                await self._save_thread(incident_id, ref)
        return ref
