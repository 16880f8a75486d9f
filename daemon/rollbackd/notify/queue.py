"""A bounded queue between the runner and the notifiers: the runner never waits for Slack.

Root messages create a thread whose reference is kept on the incident (so replies after a restart
land in the same thread). When the queue is full the new message is dropped, counted and logged:
a notifier outage must never hold up or fail a rollback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from rollbackd import redact
from rollbackd.notify import Message, Notifier, ThreadRef

log = logging.getLogger(__name__)

ThreadSaver = Callable[[str, ThreadRef], Awaitable[None]]
ThreadLoader = Callable[[str], Awaitable[ThreadRef | None]]


@dataclass(frozen=True, slots=True)
class _Item:
    op: Literal["root", "reply", "update", "plain"]
    service: str | None
    message: Message


def _redacted(message: Message) -> Message:
    return dataclasses.replace(message, title=redact.text(message.title, 300), text=redact.text(message.text, 8000),
                               fields=tuple((k, redact.text(v, 500)) for k, v in message.fields))


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
    ) -> None:
        self._notifiers = dict(notifiers)
        self._default = default
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=maxsize)
        self._threads: dict[str, ThreadRef] = {}
        self._save_thread = save_thread
        self._load_thread = load_thread
        self._on_failure = on_failure or (lambda name: None)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    # ---- what the runner calls (never blocks) ---------------------------------------------------
    def opened(self, message: Message) -> None:
        self._put(_Item("root", message.service, message))

    def reply(self, message: Message) -> None:
        self._put(_Item("reply", message.service, message))

    def update_root(self, message: Message) -> None:
        self._put(_Item("update", message.service, message))

    def post(self, message: Message) -> None:
        self._put(_Item("plain", message.service, message))

    def _put(self, item: _Item) -> None:
        item = dataclasses.replace(item, message=_redacted(item.message))  # one sink for every notifier
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "notify_dropped",
                extra={"incident_id": item.message.incident_id, "kind": item.message.kind},
            )

    # ---- the worker ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="rollbackd-notify")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued was sent (or tried), at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        await self.drain(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for notifier in {id(n): n for n in [*self._notifiers.values(), self._default]}.values():
            with contextlib.suppress(Exception):
                await notifier.close()

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._send(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a notifier must never take the daemon down
                notifier = self._notifier(item.service)
                self._on_failure(notifier.name)
                log.warning(
                    "notify_failed",
                    extra={"notifier": notifier.name, "incident_id": item.message.incident_id,
                           "error": f"{type(exc).__name__}: {exc}"},
                )
            finally:
                self._queue.task_done()

    def _notifier(self, service: str | None) -> Notifier:
        return self._notifiers.get(service or "", self._default)

    async def _thread(self, incident_id: str | None) -> ThreadRef | None:
        if incident_id is None:
            return None
        if incident_id not in self._threads and self._load_thread is not None:
            ref = await self._load_thread(incident_id)
            if ref:
                self._threads[incident_id] = ref
        return self._threads.get(incident_id)

    async def _send(self, item: _Item) -> None:
        notifier = self._notifier(item.service)
        incident_id = item.message.incident_id
        if item.op == "root":
            ref = await notifier.post(item.message, None)
            if ref and incident_id:
                self._threads[incident_id] = ref
                if self._save_thread is not None:
                    await self._save_thread(incident_id, ref)
            return
        thread = await self._thread(incident_id) if item.op != "plain" else None
        if item.op == "update":
            if thread is not None:
                await notifier.update(thread, item.message)
            await notifier.post(item.message, thread)  # the outcome also lands in the thread
            return
        await notifier.post(item.message, thread)
