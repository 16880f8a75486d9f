"""The switch of a service that has none: all traffic stays where it is, and steps say so."""

from __future__ import annotations

from rollbackd.traffic import TrafficOptions


class NullTrafficSwitch:
    kind = "null"
    Options = TrafficOptions

    def __init__(self, options: TrafficOptions | None = None) -> None:
        self.options = options

    async def weight(self) -> int:
        return 100

    async def set_weight(self, percent: int) -> None:
        return None
