"""The ``slack`` notifier: a bot token (one root message per incident, replies threaded under it, the
root edited with the outcome) or an incoming webhook (flat messages, no threads).

    notify:
      type: slack
      options:
        bot_token: ${SLACK_BOT_TOKEN}      # bot mode (chat:write, channels:history); or webhook_url: ...
        channel: C0123ABCD                 # bot mode only
        base_url: null                     # bot mode only: Web API base, e.g. an Enterprise proxy
        timeout: 10                        # seconds per HTTP request
        max_retries: 3                     # retries after the first attempt (429, 5xx, connection errors)
        retry_after_max: 10                # seconds: a longer Retry-After is cut to this (the queue backs off)
        mention_on_escalation: "<!subteam^S0123>"

Rendering: rollbackd.notify.slack_blocks.

Webhook mode: ``post`` returns None (a webhook cannot thread), so NotifyQueue posts replies and the
outcome as new messages; ``update`` is a no-op (nothing to edit, and the queue posts the outcome anyway).

Retries are bounded by ``max_retries``: the Web API client gets slack-sdk's connection and server-error
handlers and a rate-limit handler that honours Retry-After up to ``retry_after_max`` (slack-sdk's own
sleeps whatever Slack says: one ``Retry-After: 3600`` stalled every later notification); webhook sends
get our own loop, because AsyncWebhookClient never retries a 5xx. An incident's root is the
exception: it carries the incident id as message metadata and is never re-sent blindly (a 5xx or a
lost connection may hide a root that landed); ``find`` reads the channel's history for it first.
Every failure leaves as ``BackendError("slack", "<method>: <error code or HTTP status>")``; neither
the token nor the webhook URL appears in errors or logs (slack-sdk logs URLs at DEBUG, so its clients
get a logger of their own held at WARNING).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Self, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from rollbackd.errors import BackendError
from rollbackd.notify import Message, ThreadRef
from rollbackd.notify.slack_blocks import render

T = TypeVar("T")
log = logging.getLogger(__name__)
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)  # slack-sdk's DEBUG lines carry the webhook URL

RETRY_AFTER_MAX: Final = 10.0
ROOT_EVENT: Final = "rollbackd_incident"  # the metadata event type of an incident's root message
HISTORY_LIMIT: Final = 200  # messages per page read back when looking for a root
HISTORY_PAGES: Final = 5  # a storm's own top-level messages may follow the root: up to 1,000 read back
BACKOFF_S: Final = 0.5
_CODE = re.compile(r"[a-z0-9_.\-]{1,64}")


class SlackNotifier:
    name = "slack"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

        bot_token: SecretStr | None = None
        channel: str | None = Field(default=None, min_length=1)
        webhook_url: SecretStr | None = None
        base_url: str | None = None
        timeout: float = Field(default=10, gt=0)
        max_retries: int = Field(default=3, ge=0, le=10)
        retry_after_max: float = Field(default=RETRY_AFTER_MAX, gt=0, le=300)
        mention_on_escalation: str | None = None

        @model_validator(mode="after")
        def _one_mode(self) -> Self:
            bot, hook = _given(self.bot_token), _given(self.webhook_url)
            if bot == hook:
                raise ValueError("set exactly one of bot_token (threads) or webhook_url (no threads)")
            if bot and not self.channel:
                raise ValueError("bot_token needs channel")
            if hook and (self.channel or self.base_url):
                raise ValueError("channel and base_url apply to bot_token only (a webhook has its own channel)")
            if hook and not _secret(self.webhook_url).startswith(("https://", "http://")):
                raise ValueError("webhook_url must be an http(s) URL")
            return self

    def __init__(self, options: SlackNotifier.Options) -> None:
        self._options = options
        self.threads = options.bot_token is not None  # an incoming webhook cannot thread
        self._http: aiohttp.ClientSession | None = None  # created in the running loop, on first use
        self._web: AsyncWebClient | None = None
        self._roots_web: AsyncWebClient | None = None
        self._hook: AsyncWebhookClient | None = None
        retries = options.max_retries
        if options.bot_token is not None:
            self._web = self._web_client(
                AsyncConnectionErrorRetryHandler(max_retry_count=retries),
                CappedRateLimitHandler(max_retry_count=retries, cap=options.retry_after_max),
                AsyncServerErrorRetryHandler(max_retry_count=retries),
            )
            # roots: retried by _with_retries, which looks for a root that landed before it sends another
            self._roots_web = self._web_client()
        else:
            self._hook = AsyncWebhookClient(
                url=_secret(options.webhook_url),
                timeout=math.ceil(options.timeout),
                logger=_sdk_log,
                retry_handlers=[],  # _with_retries retries; two layers would multiply attempts
            )

    def _web_client(self, *retry_handlers: AsyncRetryHandler) -> AsyncWebClient:
        options = self._options
        assert options.bot_token is not None
        return AsyncWebClient(
            token=options.bot_token.get_secret_value(),
            base_url=options.base_url or AsyncWebClient.BASE_URL,
            timeout=math.ceil(options.timeout),
            logger=_sdk_log,
            retry_handlers=list(retry_handlers),
        )

    async def post(self, message: Message, thread: ThreadRef | None) -> ThreadRef | None:
        """Post ``message`` (under ``thread`` in bot mode); returns the thread's root reference."""
        text, blocks = render(message, self._mention(message))
        if self._hook is not None:
            await self._with_retries("webhook", lambda: self._send_webhook(text, blocks))
            return None
        channel = (thread or {}).get("channel") or self._options.channel or ""
        thread_ts = (thread or {}).get("ts")
        if thread_ts is None and message.incident_id:
            return await self._post_root(message, channel, text, blocks)
        data = await self._call("chat.postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts)
        if thread_ts:
            return {"channel": channel, "ts": thread_ts}
        return _ref(data, channel)

    async def _post_root(self, root: Message, channel: str, text: str, blocks: list[dict[str, Any]]) -> ThreadRef:
        """An incident's root carries the incident id (message metadata). A failure that may hide a root
        that landed (5xx, a lost connection) asks Slack's history before the next try, so a thread is
        never split by a second root."""
        metadata = {"event_type": ROOT_EVENT, "event_payload": {"incident_id": root.incident_id}}

        async def send() -> ThreadRef:
            data = await self._call(
                "chat.postMessage", web=self._roots_web, channel=channel, text=text, blocks=blocks, metadata=metadata
            )
            return _ref(data, channel)

        return await self._with_retries("chat.postMessage", send, landed=lambda: self._search(root))

    async def find(self, root: Message) -> ThreadRef | None:
        """The root rollbackd posted for ``root``'s incident, from the channel's recent history (needs the
        ``channels:history`` scope, ``groups:history`` for a private channel); None without one, or when
        the history cannot be read at all (no scope): then a root is posted as if none were there."""
        try:
            return await self._search(root)
        except BackendError as exc:
            if exc.retryable:
                raise  # Slack fails just now: whether the root landed is unknown, so none is posted yet
            log.warning("slack_root_search_failed", extra={"incident_id": root.incident_id, "error": str(exc)})
            return None

    async def _search(self, root: Message) -> ThreadRef | None:
        """As ``find``, but a failed search raises: a root may have landed, so none is posted again yet."""
        if self._web is None or not root.incident_id:
            return None
        channel = self._options.channel or ""
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            data = await self._call(
                "conversations.history",
                web=self._roots_web,  # one try: what it answers decides; the post's own retries come after
                channel=channel,
                limit=HISTORY_LIMIT,
                oldest=_opened_after(root.incident_id),
                include_all_metadata=True,
                cursor=cursor,
            )
            for found in data.get("messages") or []:
                if _root_of(found) == root.incident_id:
                    return _ref(found, channel)
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not data.get("has_more") or not cursor:
                return None
        return None

    async def update(self, thread: ThreadRef, message: Message) -> None:
        """Edit the root of ``thread``; a no-op in webhook mode or for a reference without ``ts``."""
        if self._web is None or not thread.get("ts"):
            return
        text, blocks = render(message, self._mention(message))
        channel = thread.get("channel") or self._options.channel or ""
        await self._call("chat.update", channel=channel, ts=thread["ts"], text=text, blocks=blocks)

    async def close(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()
        self._http = None

    # ---- plumbing ------------------------------------------------------------------------------
    def _mention(self, message: Message) -> str | None:
        if message.mention:
            return message.mention
        return self._options.mention_on_escalation if message.kind == "escalation" else None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._options.timeout))
            for client in (self._web, self._roots_web, self._hook):
                if client is not None:
                    client.session = self._http
        return self._http

    async def _call(self, method: str, *, web: AsyncWebClient | None = None, **kwargs: Any) -> dict[str, Any]:
        client = web or self._web
        assert client is not None
        self._session()
        try:
            if method == "chat.update":
                response = await client.chat_update(**kwargs)
            elif method == "conversations.history":
                response = await client.conversations_history(**kwargs)
            else:
                response = await client.chat_postMessage(**kwargs)
        except Exception as exc:  # the boundary: only BackendError leaves this module
            raise translate(method, exc) from None
        return response.data if isinstance(response.data, dict) else {}

    async def _send_webhook(self, text: str, blocks: list[dict[str, Any]]) -> None:
        assert self._hook is not None
        self._session()
        try:
            response = await self._hook.send(text=text, blocks=blocks)
        except Exception as exc:
            raise translate("webhook", exc) from None
        status = response.status_code
        if not 200 <= status < 300:
            asked = retry_after(response.headers.get("Retry-After"), math.inf) if status == 429 else None
            raise BackendError(
                "slack", describe("webhook", status, response.body), retryable=_retryable(status), retry_after=asked
            )

    async def _with_retries(
        self, method: str, send: Callable[[], Awaitable[T]], landed: Callable[[], Awaitable[T | None]] | None = None
    ) -> T:
        """``send()``, retried after a retryable failure, at most ``max_retries`` times: after a 429's
        Retry-After (a longer one fails at once: the queue's channel backs off), else a doubling backoff.
        Where a failure may hide a send that landed (a 5xx, a lost connection), ``landed()`` is asked
        first: what it finds is the answer; when it cannot tell (it raises), the failure stands."""
        attempt = 0
        while True:
            try:
                return await send()
            except BackendError as error:
                if landed is not None and error.retryable and error.retry_after is None:
                    try:
                        found = await landed()
                    except BackendError:
                        raise error from None
                    if found is not None:
                        log.info("slack_found_landed", extra={"method": method, "after": str(error)})
                        return found
                wait = error.retry_after if error.retry_after is not None else min(BACKOFF_S * 2**attempt, 8.0)
                if not error.retryable or attempt >= self._options.max_retries or wait > self._options.retry_after_max:
                    raise
            attempt += 1
            log.info("slack_retry", extra={"method": method, "attempt": attempt, "wait_s": round(wait, 2)})
            await asyncio.sleep(wait)


# ---- errors ------------------------------------------------------------------------------------
def translate(method: str, exc: Exception) -> BackendError:
    """A slack-sdk or aiohttp exception as a BackendError naming the method and Slack's error code."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, SlackApiError):
        status = int(getattr(exc.response, "status_code", 0) or 0)
        data = getattr(exc.response, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        headers = getattr(exc.response, "headers", None) or {}
        asked = next((v for k, v in headers.items() if k.lower() == "retry-after"), None) if status == 429 else None
        return BackendError(
            "slack",
            describe(method, status, code),
            retryable=_retryable(status),
            retry_after=retry_after(asked, math.inf) if status == 429 else None,  # absent: 1 s
        )
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return BackendError("slack", f"{method}: connection failed ({type(exc).__name__})", retryable=True)
    return BackendError("slack", f"{method}: {type(exc).__name__}")


def describe(method: str, status: int, code: object) -> str:
    """``chat.postMessage: invalid_auth`` / ``webhook: HTTP 500`` / ``webhook: HTTP 404 no_service``."""
    parts = [f"HTTP {status}"] if status != 200 else []
    if isinstance(code, str) and _CODE.fullmatch(code.strip()):
        parts.append(code.strip())
    return f"{method}: {' '.join(parts) or 'failed'}"


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after(value: object, cap: float = RETRY_AFTER_MAX) -> float:
    """Seconds from a Retry-After header (1 when absent or unreadable), at most ``cap``."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        seconds = float(str(value))
    except ValueError:
        return 1.0
    return min(max(seconds, 0.0), cap) if math.isfinite(seconds) else 1.0


class CappedRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's rate-limit handler sleeps whatever Retry-After says; this one retries only when the
    wait is at most ``cap`` and otherwise lets the 429 fail at once (the queue's channel backs off)."""

    def __init__(self, *, max_retry_count: int, cap: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.cap = cap

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429 and _asked_wait(response) <= self.cap

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error or BackendError("slack", "rate limited without a response")
        state.next_attempt_requested = True
        await asyncio.sleep(min(_asked_wait(response), self.cap))
        state.increment_current_attempt()


def _asked_wait(response: HttpResponse) -> float:
    header = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), None)
    return retry_after(header, math.inf)


def _ref(data: Mapping[str, Any], channel: str) -> ThreadRef:
    ts = data.get("ts")
    if not isinstance(ts, str) or not ts:
        raise BackendError("slack", "chat.postMessage: answer without ts")
    return {"channel": str(data.get("channel") or channel), "ts": ts}


def _root_of(message: object) -> object:
    """The incident id a history message carries as a root's metadata; None for any other message
    (anyone may post metadata to the channel: nothing in it is trusted to have a shape)."""
    meta = message.get("metadata") if isinstance(message, dict) else None
    if not isinstance(meta, dict) or meta.get("event_type") != ROOT_EVENT:
        return None
    payload = meta.get("event_payload")
    return payload.get("incident_id") if isinstance(payload, dict) else None


def _opened_after(incident_id: str) -> str | None:
    """Slack's ``oldest`` for the history holding an incident's root: a little before the time its id
    carries (``20261122-031502-a1b2``), or None (the whole recent history) for another id."""
    try:
        opened = datetime.strptime(incident_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return f"{opened.timestamp() - 300:.6f}"


def _given(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())


def _secret(secret: SecretStr | None) -> str:
    return "" if secret is None else secret.get_secret_value().strip()
