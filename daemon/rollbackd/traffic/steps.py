"""``traffic.cut`` and ``traffic.restore``. The cut remembers the weight it found in the incident's
context (journaled: it survives a crash) before it sets 0; the restore, placed after ``verify`` in the
plan, puts exactly that weight back. Without a switch both succeed and say nothing was switched."""

from __future__ import annotations

from rollbackd import facts
from rollbackd.plan import BaseStep, StepContext
from rollbackd.records import JSON
from rollbackd.traffic import TrafficSwitch

SAVED = facts.TRAFFIC_WEIGHT  # the weight the cut found
NULL_SUMMARY = "no traffic switch configured: traffic was not switched"


def switch_of(ctx: StepContext) -> TrafficSwitch:
    return ctx.runtime.caps.traffic_switch()


class CutTraffic(BaseStep):
    type = "traffic.cut"

    def describe(self) -> str:
        return "move traffic off the bad version (weight 0), remembering the weight found"

    async def is_done(self, ctx: StepContext) -> bool:
        switch = switch_of(ctx)
        if switch.kind == "null":
            return True
        return ctx.fact(SAVED) is not None and await switch.weight() == 0

    async def run(self, ctx: StepContext) -> JSON:
        switch = switch_of(ctx)
        if switch.kind == "null":
            return {"switch": "null", "summary": NULL_SUMMARY}
        before = ctx.fact(SAVED)
        if before is None:  # a resumed cut must not remember its own 0
            before = await switch.weight()
            await ctx.remember(SAVED, before)
        await switch.set_weight(0)
        return {
            "switch": switch.kind,
            "weight_before": before,
            "weight": 0,
            "summary": f"traffic cut: weight {before} -> 0 ({switch.kind} switch)",
        }


class RestoreTraffic(BaseStep):
    type = "traffic.restore"

    def describe(self) -> str:
        return "give traffic back (the weight traffic.cut found), now that verification passed"

    async def is_done(self, ctx: StepContext) -> bool:
        switch = switch_of(ctx)
        saved = ctx.fact(SAVED)
        if switch.kind == "null" or saved is None:
            return True
        return await switch.weight() == saved

    async def run(self, ctx: StepContext) -> JSON:
        switch = switch_of(ctx)
        if switch.kind == "null":
            return {"switch": "null", "summary": NULL_SUMMARY}
        weight = ctx.fact(SAVED)
        if weight is None:
            return {"switch": switch.kind, "summary": "traffic was not cut by this incident: left as it is"}
        await switch.set_weight(weight)
        return {"switch": switch.kind, "weight": weight, "summary": f"traffic restored: weight {weight}"}
