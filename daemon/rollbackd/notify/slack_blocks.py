"""Slack messages in Block Kit: a header with the title, prefixed by an emoji for the severity (the colour:
info :information_source:, good :white_check_mark:, warning :warning:,
danger :rotating_light:; an emoji, not a legacy attachment colour, so the fallback text
and webhooks show it too); the text as a mrkdwn section; ``Message.fields`` as mrkdwn fields (10 per
section); a context line with service and incident id. ``text`` (the notification fallback) is always
set and starts with the mention on escalations. User-supplied text is escaped (``& < >``) so an error
message cannot ping ``<!channel>``; everything is clipped to Slack's limits (header 150, section 3000,
field 2000, counted in UTF-16 units) with "…", never splitting a surrogate pair or an ``&entity;``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from rollbackd.notify import Message, Severity

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
_OPEN_TAIL = re.compile(r"(&[a-z]{0,5}|<[^<>]{0,200})$")


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
