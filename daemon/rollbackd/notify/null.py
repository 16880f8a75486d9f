"""The notifier used where none is configured, so callers never ask whether one is."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from rollbackd.notify import Message, ThreadRef


class NullNotifier:
    name = "null"
    threads = True

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, options: Options | None = None) -> None:
        self.posted: list[Message] = []

    async def post(self, message: Message, thread: ThreadRef | None) -> ThreadRef | None:
        self.posted.append(message)
        return {"null": message.incident_id or ""}

    async def update(self, thread: ThreadRef, message: Message) -> None:
        self.posted.append(message)

    async def close(self) -> None:
        return None
