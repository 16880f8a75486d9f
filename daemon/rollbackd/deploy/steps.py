"""``deploy.revert`` (redeploy the incident's target, the last green release) and ``deploy.roll_forward``
(undo a revert: start the kept container / release again). Both are idempotent and their ``is_done``
asks the world (what runs, is it healthy, does the registry say so), so a kill -9 anywhere resumes
correctly: a step that finished is skipped, one cut short is re-entered where it stopped."""

from __future__ import annotations

import time
from typing import Any

from rollbackd.config import Duration
from rollbackd.deploy import DeployedRelease, Deployer
from rollbackd.deploy.ledger import Ledger, release_from_target
from rollbackd.errors import FatalError
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.records import JSON, Release

DONE_KEY = "deploy_done"  # context: the version a deploy of this incident finished (backends without current())
FROM_KEY = "deploy_from"  # context: what ran before the revert (roll-forward goes back to it)


class DeployStepOptions(StepOptions):
    health_timeout: Duration | None = None  # default: the deploy section's health_timeout


def _deployer(ctx: StepContext) -> Deployer:
    deployer: Any = ctx.runtime.resources.get("deployer")
    if deployer is None:
        raise FatalError(f"service {ctx.service} has no `deploy:` section: nothing can redeploy its code")
    return deployer  # type: ignore[no-any-return]


def _ledger(ctx: StepContext) -> Ledger:
    ledger: Any = ctx.runtime.resources.get("releases")
    if ledger is None:
        raise FatalError(f"service {ctx.service} has no release registry")
    return ledger  # type: ignore[no-any-return]


async def _arrived(ctx: StepContext, release: Release, current: DeployedRelease) -> bool:
    deployer, ledger = _deployer(ctx), _ledger(ctx)
    ran = current.matches(release) or ctx.incident.context.get(DONE_KEY) == release.version
    if not ran or not await deployer.healthy():
        return False
    live = await ledger.live()
    return live is not None and live.version == release.version


class Redeploy(BaseStep):
    type = "deploy.revert"
    Options = DeployStepOptions

    def describe(self) -> str:
        return "redeploy the last green release (the incident's target)"

    def _target(self, ctx: StepContext) -> Release:
        target = ctx.incident.context.get("target")
        if not target:
            raise FatalError("the incident has no target release: nothing to redeploy")
        return release_from_target(ctx.service, target)

    async def is_done(self, ctx: StepContext) -> bool:
        return await _arrived(ctx, self._target(ctx), await _deployer(ctx).current())

    async def run(self, ctx: StepContext) -> JSON:
        target, deployer, ledger = self._target(ctx), _deployer(ctx), _ledger(ctx)
        started = time.monotonic()
        await ledger.observe()  # the bad release is in the registry even if the pipeline forgot it
        before = await deployer.current()
        if FROM_KEY not in ctx.incident.context:
            live = await ledger.live()
            await ctx.save(FROM_KEY, {**before.to_json(), "release_id": live.id if live else None,
                                      "version": live.version if live else before.version})
        if ctx.incident.context.get(DONE_KEY) == target.version:
            result: JSON = {"noop": True, "resumed": True}
        else:
            result = await deployer.deploy(await ledger.with_spec(target), incident=ctx.incident.id)
        timeout = getattr(self.options, "health_timeout", None) or deployer.options.health_timeout
        health = await deployer.wait_healthy(time.monotonic() + timeout)
        await ctx.save(DONE_KEY, target.version)
        await ledger.moved(target, actor="rollbackd", note=f"rolled back by incident {ctx.incident.id}",
                           old_status="rolled_back")
        was = ctx.incident.context[FROM_KEY].get("version")
        verb = "already ran" if result.get("noop") else "redeployed"
        why = (ctx.incident.context.get("target") or {}).get("why") or "named by the incident"
        spec = result.get("spec")
        note = f" ({spec})" if spec and spec != "recorded" else ""
        return {**result, **health, "from": was, "to": target.version, "why": why,
                "step_to_healthy_s": round(time.monotonic() - started, 3),
                "summary": f"{target.version} {verb} (was {was}); healthy. Why {target.version}: {why}{note}"}


class RollForwardDeploy(BaseStep):
    type = "deploy.roll_forward"
    Options = DeployStepOptions

    def describe(self) -> str:
        return "undo a code rollback: start the release it replaced again (the kept container)"

    async def _back_to(self, ctx: StepContext) -> tuple[str, Release | None]:
        of = ctx.incident.context.get("rollforward_of")
        if not of:
            raise FatalError("deploy.roll_forward needs `rollforward_of` in the incident context")
        original = await _ledger(ctx).store.get_incident(str(of))
        if original is None:
            raise FatalError(f"no incident {of} to roll forward")
        before = original.context.get(FROM_KEY) or {}
        if not before.get("version"):
            return str(of), None
        ledger = _ledger(ctx)
        release = await ledger.by_id(before["release_id"]) if before.get("release_id") else None
        return str(of), release or Release(service=ctx.service, version=before["version"], image=before.get("image"),
                                           digest=before.get("image_id"))

    async def is_done(self, ctx: StepContext) -> bool:
        _, release = await self._back_to(ctx)
        return release is None or await _arrived(ctx, release, await _deployer(ctx).current())

    async def run(self, ctx: StepContext) -> JSON:
        of, release = await self._back_to(ctx)
        if release is None:
            return {"noop": True, "summary": f"incident {of} did not redeploy code: nothing to roll forward"}
        deployer, ledger = _deployer(ctx), _ledger(ctx)
        started = time.monotonic()
        if ctx.incident.context.get(DONE_KEY) == release.version:
            result: JSON = {"noop": True, "resumed": True}
        else:
            result = await deployer.roll_forward(of, release, incident=ctx.incident.id)
        timeout = getattr(self.options, "health_timeout", None) or deployer.options.health_timeout
        health = await deployer.wait_healthy(time.monotonic() + timeout)
        await ctx.save(DONE_KEY, release.version)
        if release.id is not None:
            await ledger.moved(release, actor="rollbackd", note=f"rolled forward by incident {ctx.incident.id}",
                               old_status="superseded")
        return {**result, **health, "to": release.version, "step_to_healthy_s": round(time.monotonic() - started, 3),
                "summary": f"rolled forward to {release.version} (undoing incident {of}); healthy"}
