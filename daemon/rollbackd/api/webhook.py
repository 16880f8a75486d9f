"""POST /v1/webhook/alertmanager: auth, size, media type, strict parse, journal, 202.

The answer comes as soon as every alert of the notification is journaled, never after the rollback:
Alertmanager times out and re-sends, so duplicates are normal input and cost no second incident.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from rollbackd.alertmanager import parse_webhook
from rollbackd.api import auth
from rollbackd.api.problems import problem
from rollbackd.config import Settings
from rollbackd.errors import PayloadError
from rollbackd.incidents.intake import Intake
from rollbackd.jsontext import one_shot
from rollbackd.reasons import Reason, WebhookResult
from rollbackd.records import Alert, Decision

WEBHOOK_PATH = "/v1/webhook/alertmanager"
MAX_BODY = 1_048_576
_SEEN_BODIES = 4096
# What a parsed body costs in memory, per byte of the body (measured: a 1 MiB body's alerts hold ~3.1 MB).
COST_PER_BODY_BYTE = 3
_FIRST = object()


@dataclass(slots=True)
class SeenBody:
    alerts: list[Alert]
    cost: int
    duplicate_answer: str | None = None  # the 202 body once every alert of it is a duplicate (it stays so)


class SeenBodies:
    """Bodies already parsed and journaled, by digest. Alertmanager re-sends the very same bytes
    (retries, HA peers), so a storm of duplicates skips parsing and validation: the alerts of an
    identical body are known, and every one of them is a duplicate now. A body's parse is kept when
    its bytes come a second time; the first time only its digest is (a storm of distinct bodies
    would fill the cache with parses that never serve, and its memory slows every request). Bounded
    by the memory the parsed bodies take (``max_bytes``, estimated from their size) and by count;
    least recently used first out; a body that alone would exceed the bound is not kept."""

    def __init__(self, max_bytes: int = 64 * MAX_BODY, max_entries: int = _SEEN_BODIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.size = 0
        self._bodies: OrderedDict[bytes, SeenBody] = OrderedDict()
        self._once: OrderedDict[bytes, None] = OrderedDict()  # digests seen once, oldest first
        self.max_once = 4 * max_entries

    def __len__(self) -> int:
        return len(self._bodies)

    def get(self, digest: bytes) -> SeenBody | None:
        found = self._bodies.get(digest)
        if found is not None:
            self._bodies.move_to_end(digest)
        return found

    def add(self, digest: bytes, alerts: list[Alert], body_size: int) -> None:
        """Remember a parsed body; its parse is kept from its second time on."""
        cost = body_size * COST_PER_BODY_BYTE
        if cost > self.max_bytes or digest in self._bodies:
            return
        if self._once.pop(digest, _FIRST) is _FIRST:
            self._once[digest] = None
            if len(self._once) > self.max_once:
                self._once.popitem(last=False)
            return
        self._bodies[digest] = SeenBody(alerts, cost)
        self.size += cost
        while self.size > self.max_bytes or len(self._bodies) > self.max_entries:
            _, freed = self._bodies.popitem(last=False)
            self.size -= freed.cost


SEEN = web.AppKey("seen_bodies", SeenBodies)


class ResultCounter(Protocol):
    def webhook_result(self, result: WebhookResult) -> None: ...


class WebhookCore(Protocol):
    """What the webhook handler uses: the daemon's Core, or an acceptor process's (rollbackd.acceptor)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> ResultCounter: ...

    @property
    def intake(self) -> Intake: ...


WEBHOOK = web.AppKey("webhook_core", WebhookCore)
# An acceptor hands a body it may not decide alone (rollbackd.acceptor) to the daemon: its answer is the answer.
Handoff = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
HANDOFF: web.AppKey[Handoff] = web.AppKey("webhook_handoff")


async def read_limited(request: web.Request, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (exactly ``limit`` bytes is fine)."""
    length = request.content_length
    if length is not None:  # what Alertmanager sends: one read of a body already buffered
        if length > limit:
            return None
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError as cut:  # the client hung up early: the parse refuses what came
            return cut.partial
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def media_problem(request: web.Request) -> str | None:
    ctype = request.headers.get("Content-Type", "")
    mime, _, params = ctype.partition(";")
    if mime.strip().lower() != "application/json":
        return f"Content-Type must be application/json, got {ctype[:80]!r}"
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") not in ("charset=utf-8", 'charset="utf-8"'):
        return f"only charset=utf-8 is accepted, got {params.strip()[:40]!r}"
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return f"Content-Encoding {encoding[:40]!r} is not accepted (Alertmanager does not compress)"
    return None


async def _checked_body(request: web.Request, core: WebhookCore) -> bytes | web.Response:
    """The body, or the problem answered instead (counted): token, media type, size."""
    count = core.metrics.webhook_result
    token = core.settings.auth.webhook_token
    if auth.match(auth.bearer(request), [("alertmanager", token)]) is None:
        count(WebhookResult.UNAUTHORIZED)
        return problem(401, "missing or wrong webhook token")
    wrong_media = media_problem(request)
    if wrong_media:
        count(WebhookResult.UNSUPPORTED_MEDIA_TYPE)
        return problem(415, wrong_media)
    if core.intake.runner.starts:  # an incident is starting: it goes first, the storm waits a moment
        await core.intake.runner.starts.step_aside()
    body = await read_limited(request)
    if body is None:
        count(WebhookResult.TOO_LARGE)
        return problem(413, f"body larger than {MAX_BODY} bytes")
    return body


async def alertmanager_webhook(request: web.Request) -> web.StreamResponse:
    received_at = time.time()
    core = request.app[WEBHOOK]
    count = core.metrics.webhook_result
    body = await _checked_body(request, core)
    if isinstance(body, web.Response):
        return body
    digest = hashlib.blake2b(body, digest_size=16).digest()
    seen = request.app[SEEN]
    known = seen.get(digest)
    if known is not None:
        alerts = known.alerts
    else:
        try:
            _, alerts = parse_webhook(body)
        except PayloadError as exc:
            count(WebhookResult.BAD_REQUEST)
            return problem(400, str(exc), field=exc.field)
    handoff = request.app.get(HANDOFF)
    if handoff is not None and not await core.intake.decides_alone(alerts):
        handed = await handoff(request, body)
        if handed.status == 202:  # journaled by the daemon: a copy sent again is a duplicate here too
            core.intake.journaled(alerts)
            if known is None:
                seen.add(digest, alerts, len(body))
        return handed
    decisions = await core.intake.receive(alerts, received_at)
    count(WebhookResult.ACCEPTED)
    if known is None:
        seen.add(digest, alerts, len(body))
        return _accepted(answer(alerts, decisions))
    if not all(d.reason is Reason.DUPLICATE for d in decisions):
        return _accepted(answer(alerts, decisions))
    if known.duplicate_answer is None:  # a re-sent body's answer is the same every time: encoded once
        known.duplicate_answer = answer(alerts, decisions)
    return _accepted(known.duplicate_answer)


_encode = one_shot(json.JSONEncoder())  # json.dumps's text, set up once (rollbackd.jsontext)


def answer(alerts: list[Alert], decisions: list[Decision]) -> str:
    """The 202 body: what was decided for each alert (Alertmanager ignores it; people and tests read it)."""
    return _encode(
        {
            "accepted": len(alerts),
            "decisions": [
                {
                    "fingerprint": a.fingerprint,
                    "status": a.status,
                    "service": d.service,
                    "action": d.action.value,
                    "reason": d.reason.value,
                }
                for a, d in zip(alerts, decisions, strict=True)
            ],
        }
    )


def _accepted(text: str) -> web.Response:
    return web.Response(text=text, status=202, content_type="application/json")
