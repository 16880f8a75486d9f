"""The ``slack`` notifier: a bot token (one root message per incident, replies threaded under it, the
root edited with the outcome) or an incoming webhook (flat messages, no threads).

    notify:
      type: slack
      options:
        bot_token: ${SLACK_BOT_TOKEN}      # bot mode (chat:write); or webhook_url: ${SLACK_WEBHOOK_URL}
        channel: C0123ABCD                 # bot mode only
        base_url: null                     # bot mode only: Web API base, e.g. an Enterprise proxy
        timeout: 10                        # seconds per HTTP request
        max_retries: 3                     # retries after the first attempt (429, 5xx, connection errors)
        retry_after_max: 10                # seconds: a longer Retry-After is cut to this (the queue backs off)
        mention_on_escalation: "<!subteam^S0123>"

Rendering (Block Kit): a header with the title, prefixed by an emoji for the severity (the colour:
info :information_source:, good :white_check_mark:, warning :warning:,
danger :rotating_light:; an emoji, not a legacy attachment colour, so the fallback text
and webhooks show it too); the text as a mrkdwn section; ``Message.fields`` as mrkdwn fields (10 per
section); a context line with service and incident id. ``text`` (the notification fallback) is always
set and starts with the mention on escalations. User-supplied text is escaped (``& < >``) so an error
message cannot ping ``<!channel>``; everything is clipped to Slack's limits (header 150, section 3000,
field 2000, counted in UTF-16 units) with "…", never splitting a surrogate pair or an ``&entity;``.

Webhook mode: ``post`` returns None (a webhook cannot thread), so NotifyQueue posts replies and the
outcome as new messages; ``update`` is a no-op (nothing to edit, and the queue posts the outcome anyway).

Retries are bounded by ``max_retries``: the Web API client gets slack-sdk's connection and server-error
handlers and a rate-limit handler that honours Retry-After up to ``retry_after_max`` (slack-sdk's own
sleeps whatever Slack says: one ``Retry-After: 3600`` stalled every later notification); webhook sends
get our own loop, because AsyncWebhookClient never retries a 5xx. Every failure leaves as
``BackendError("slack", "<method>: <error code or HTTP status>")``; neither the token nor the webhook
URL appears in errors or logs (slack-sdk logs URLs at DEBUG, so its clients get a logger of their own
held at WARNING).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, Final, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from slack_sdk.errors import SlackApiError
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
from rollbackd.notify import Message, Severity, ThreadRef

log = logging.getLogger(__name__)
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)  # slack-sdk's DEBUG lines carry the webhook URL

SEVERITY_EMOJI: Final[Mapping[Severity, str]] = {
    "info": ":information_source:",
    "good": ":white_check_mark:",
    "warning": ":warning:",
    "danger": ":rotating_light:",
}
HEADER_MAX: Final = 150
SECTION_MAX: Final = 3000
FIELD_MAX: Final = 2000
FIELDS_PER_SECTION: Final = 10
MAX_FIELDS: Final = 40  # 4 sections: well under the 50-block limit
RETRY_AFTER_MAX: Final = 10.0
BACKOFF_S: Final = 0.5
_CODE = re.compile(r"[a-z0-9_.\-]{1,64}")
_OPEN_TAIL = re.compile(r"(&[a-z]{0,5}|<[^<>]{0,200})$")


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
        self._hook: AsyncWebhookClient | None = None
        retries = options.max_retries
        if options.bot_token is not None:
            self._web = AsyncWebClient(
                token=options.bot_token.get_secret_value(),
                base_url=options.base_url or AsyncWebClient.BASE_URL,
                timeout=math.ceil(options.timeout),
                logger=_sdk_log,
                retry_handlers=[
                    AsyncConnectionErrorRetryHandler(max_retry_count=retries),
                    CappedRateLimitHandler(max_retry_count=retries, cap=options.retry_after_max),
                    AsyncServerErrorRetryHandler(max_retry_count=retries),
                ],
            )
        else:
            self._hook = AsyncWebhookClient(
                url=_secret(options.webhook_url),
                timeout=math.ceil(options.timeout),
                logger=_sdk_log,
                retry_handlers=[],  # _send_webhook retries; two layers would multiply attempts
            )

    async def post(self, message: Message, thread: ThreadRef | None) -> ThreadRef | None:
        """Post ``message`` (under ``thread`` in bot mode); returns the thread's root reference."""
        text, blocks = render(message, self._mention(message))
        if self._hook is not None:
            await self._send_webhook(text, blocks)
            return None
        channel = (thread or {}).get("channel") or self._options.channel or ""
        thread_ts = (thread or {}).get("ts")
        data = await self._call("chat.postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts)
        if thread_ts:
            return {"channel": channel, "ts": thread_ts}
        ts = data.get("ts")
        if not isinstance(ts, str) or not ts:
            raise BackendError("slack", "chat.postMessage: answer without ts")
        return {"channel": str(data.get("channel") or channel), "ts": ts}

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
            for client in (self._web, self._hook):
                if client is not None:
                    client.session = self._http
        return self._http

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        assert self._web is not None
        self._session()
        try:
            if method == "chat.update":
                response = await self._web.chat_update(**kwargs)
            else:
                response = await self._web.chat_postMessage(**kwargs)
        except Exception as exc:  # the boundary: only BackendError leaves this module
            raise translate(method, exc) from None
        return response.data if isinstance(response.data, dict) else {}

    async def _send_webhook(self, text: str, blocks: list[dict[str, Any]]) -> None:
        assert self._hook is not None
        self._session()
        attempt = 0
        while True:
            wait = min(BACKOFF_S * 2**attempt, 8.0)
            try:
                response = await self._hook.send(text=text, blocks=blocks)
            except Exception as exc:
                error = translate("webhook", exc)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return
                asked = retry_after(response.headers.get("Retry-After"), math.inf) if status == 429 else None
                error = BackendError(
                    "slack", describe("webhook", status, response.body), retryable=_retryable(status), retry_after=asked
                )
                wait = asked if asked is not None else wait
            cap = self._options.retry_after_max  # a longer wait is the queue's (per channel), not ours
            if not error.retryable or attempt >= self._options.max_retries or wait > cap:
                raise error
            attempt += 1
            log.info("slack_retry", extra={"method": "webhook", "attempt": attempt, "wait_s": round(wait, 2)})
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
            retry_after=None if asked is None else retry_after(asked, math.inf),
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


def _given(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())


def _secret(secret: SecretStr | None) -> str:
    return "" if secret is None else secret.get_secret_value().strip()


# ---- rendering ---------------------------------------------------------------------------------
def render(message: Message, mention: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """``(fallback text, blocks)`` for ``message``; every text within Slack's limits."""
    emoji = SEVERITY_EMOJI.get(message.severity, SEVERITY_EMOJI["info"])
    title = message.title.strip() or message.kind
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(f"{emoji} {title}", HEADER_MAX), "emoji": True}}
    ]
    body = " ".join(part for part in (mention, escape(message.text)) if part)
    if body.strip():
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip(body, SECTION_MAX)}})
    fields = [
        {"type": "mrkdwn", "text": clip(f"*{escape(key)}*\n{escape(value)}", FIELD_MAX)}
        for key, value in message.fields[:MAX_FIELDS]
    ]
    for start in range(0, len(fields), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + FIELDS_PER_SECTION]})
    context = [
        f"{label}: *{escape(value)}*"
        for label, value in (("service", message.service), ("incident", message.incident_id))
        if value
    ]
    if context:
        elements = [{"type": "mrkdwn", "text": clip("  ·  ".join(context), SECTION_MAX)}]
        blocks.append({"type": "context", "elements": elements})
    fallback = " ".join(part for part in (mention, emoji, escape(title)) if part)
    if message.text.strip():
        fallback = f"{fallback}\n{escape(message.text)}"
    return clip(fallback, SECTION_MAX), blocks


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: user text cannot form links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most ``limit`` UTF-16 code units (Slack's count), ending in "…" when cut; never splits a
    surrogate pair, an ``&entity;`` or a ``<link>``."""
    units = text.encode("utf-16-le", errors="surrogatepass")
    if len(units) <= 2 * limit:
        return text
    cut = units[: 2 * (limit - 1)].decode("utf-16-le", errors="ignore")
    return _OPEN_TAIL.sub("", cut) + "…"
