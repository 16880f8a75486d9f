"""The container engine's sub-operations (create, stop, rename, start, remove, inspect), each idempotent
and retried with backoff on transport errors.

A transport error can hide an operation that succeeded (the answer was lost), so a retry checks the
world before it fails: a create whose name now holds a container of the same image adopts it, a rename
whose target name already holds the container is done, a remove of a container that is gone is done.
``hook(op)`` runs after each mutating sub-operation: tests raise from it to crash between two of them.

A step runs its sub-operations in a thread (``in_thread``). Cancelling the step (its leader stepped
down, the incident was aborted) cannot stop a thread, so the thread stops itself: before each call and
in each wait it checks whether the step that started it was cancelled, or whether the lease it runs
under ran out by the replica's own bound (a leader woken from SIGSTOP or a VM pause, before its loop
noticed: the step then ends as fenced), and if so makes no further call (``Abandoned``). Only the
call already in flight finishes; the step's next owner (the new leader, the resumed attempt) works
from what the engine then shows, which every sub-operation is built for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import docker
import requests

from rollbackd.errors import FencedError
from rollbackd.state import fence

T = TypeVar("T")
log = logging.getLogger(__name__)
LIBPOD = "/v4.0.0/libpod/containers/{}/json"


_cancelled: ContextVar[threading.Event | None] = ContextVar("rollbackd_engine_step_cancelled", default=None)


class Abandoned(BaseException):
    """The step these calls belong to was cancelled: its thread makes no further call. A BaseException,
    like asyncio's CancelledError, so that no handler on the way takes it for an engine error (a
    failed start must not put the previous container back under a new leader's feet)."""


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread that stops at its next engine call or wait once this is cancelled."""
    cancelled = threading.Event()
    token = _cancelled.set(cancelled)  # asyncio.to_thread runs fn in a copy of this context
    try:
        return await asyncio.to_thread(fn, *args)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    except Abandoned as exc:  # not cancelled, so the lease ran out: a fencing, as a refused write is
        raise FencedError(f"docker: {exc}") from None
    finally:
        _cancelled.reset(token)


def checkpoint() -> None:
    """Raise Abandoned when the step running in this thread was cancelled, or when the lease it runs
    under has run out by this replica's own bound (woken from a pause: the loop has not noticed yet)."""
    cancelled = _cancelled.get()
    if cancelled is not None and cancelled.is_set():
        raise Abandoned("the step was cancelled: no further engine call")
    holding = fence.holding.get()
    if holding is not None and not holding():
        raise Abandoned("the lease this step runs under may have run out: no further engine call")


def pause(seconds: float) -> None:
    """Sleep, waking at once (Abandoned) when the step running in this thread is cancelled."""
    cancelled = _cancelled.get()
    if cancelled is None:
        time.sleep(seconds)
    elif cancelled.wait(seconds):
        raise Abandoned("the step was cancelled while it waited")
    checkpoint()


def transport_error(exc: BaseException) -> bool:
    """A failure to talk to the engine (retryable), as opposed to the engine's answer (APIError)."""
    return isinstance(exc, requests.RequestException | docker.errors.DockerException) and not isinstance(
        exc, docker.errors.APIError
    )


class Engine:
    def __init__(self, api: Callable[[], docker.APIClient], *, retries: int, backoff: float) -> None:
        self.api = api
        self.retries = retries
        self.backoff = backoff
        self.hook: Callable[[str], None] | None = None
        self._changing = threading.Lock()

    def exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (run in a step's thread) while no other sequence of changes runs on this engine."""
        while not self._changing.acquire(timeout=0.1):
            checkpoint()  # cancelled while it waited: it never starts
        try:
            checkpoint()
            return fn(*args)
        finally:
            self._changing.release()

    def call(self, op: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)``, retried on transport errors (backoff doubling from ``backoff`` seconds)."""
        for attempt in range(self.retries + 1):
            checkpoint()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not transport_error(exc) or attempt >= self.retries:
                    raise
                log.warning("docker_retry", extra={"op": op, "attempt": attempt + 1, "error": str(exc)})
                pause(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _done(self, op: str) -> None:
        if self.hook is not None:
            self.hook(op)

    def inspect(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.call("inspect", self.api().inspect_container, name)
            return found
        except docker.errors.NotFound:
            return None

    def libpod(self, ident: str) -> dict[str, Any]:
        """Podman's own inspection (fields the compat API lacks); {} on Docker or when it fails."""
        api = self.api()
        try:
            resp = self.call("inspect", api.get, api.base_url + LIBPOD.format(ident), timeout=api.timeout)
        except requests.RequestException:
            return {}
        if resp.status_code != 200:
            return {}
        found: dict[str, Any] = resp.json()
        return found

    def create(self, body: dict[str, Any], name: str) -> str:
        try:
            created = self.call("create", self.api().create_container_from_config, body, name)
        except docker.errors.APIError:
            found = self.inspect(name)  # a lost answer to an earlier try: adopt what it created
            if found is None or found["Image"] != body["Image"] or (found.get("State") or {}).get("Running"):
                raise
            created = {"Id": found["Id"]}
        self._done("create")
        return str(created["Id"])

    def stop(self, ident: str, timeout: int) -> None:
        self.call("stop", self.api().stop, ident, timeout=timeout)
        self._done("stop")

    def start(self, ident: str) -> None:
        self.call("start", self.api().start, ident)
        self._done("start")

    def rename(self, ident: str, name: str) -> None:
        try:
            self.call("rename", self.api().rename, ident, name)
        except docker.errors.APIError:
            found = self.inspect(name)
            if found is None or found["Id"] != self.id_of(ident):
                raise
        self._done("rename")

    def remove(self, ident: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):  # already gone: done
            self.call("remove", self.api().remove_container, ident, force=True)
        self._done("remove")

    def id_of(self, ident: str) -> str | None:
        found = self.inspect(ident)
        return None if found is None else str(found["Id"])

    def running(self, ident: str) -> bool:
        found = self.inspect(ident)
        return bool(found and (found.get("State") or {}).get("Running"))
