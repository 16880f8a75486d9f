"""Traffic: the kill switch and canary weight of the guarded version.

    class TrafficSwitch(Protocol):
        async def weight(self) -> int                   percent of traffic on the guarded version
        async def set_weight(self, percent: int) -> None

Backends by config ``type:`` (BACKENDS): ``http`` (get and set requests with templates: a load
balancer's admin API, a feature-flag service) and ``command`` (argv templates, no shell). A service
without ``traffic:`` gets the null switch: its steps succeed and say that nothing was switched.
"""

from __future__ import annotations

from typing import Annotated, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field

BACKENDS: Final = {
    "http": "rollbackd.traffic.http:HttpTrafficSwitch",
    "command": "rollbackd.traffic.command:CommandTrafficSwitch",
    "null": "rollbackd.traffic.null:NullTrafficSwitch",
}
Weight = Annotated[int, Field(ge=0, le=100)]


class TrafficOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class TrafficSwitch(Protocol):
    kind: str  # the config type: "http", "command" or "null"

    async def weight(self) -> int: ...
    async def set_weight(self, percent: int) -> None: ...


def check_weight(value: object, where: str) -> int:
    from rollbackd.errors import BackendError

    try:
        weight = int(str(value).strip())
    except ValueError as exc:
        raise BackendError(where, f"the weight read is not an integer: {str(value)[:80]!r}") from exc
    if not 0 <= weight <= 100:
        raise BackendError(where, f"the weight read is out of 0..100: {weight}")
    return weight
