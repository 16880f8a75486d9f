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
        self._roots: set[str] = set()

    async def post(self, message: Message, thread: ThreadRef | None) -> ThreadRef | None:
        self.posted.append(message)
        if thread is None and message.incident_id:
            self._roots.add(message.incident_id)
        return {"null": message.incident_id or ""}

    async def find(self, root: Message) -> ThreadRef | None:
        return {"null": root.incident_id} if root.incident_id in self._roots else None

    async def update(self, thread: ThreadRef, message: Message) -> None:
        self.posted.append(message)

    async def close(self) -> None:
        return None
