"""``deploy.revert`` (redeploy the incident's target, the last green release) and ``deploy.roll_forward``
(undo a revert: start the kept container / release again). Both are idempotent and their ``is_done``
asks the world (what runs, is it healthy, does the registry say so), so a kill -9 anywhere resumes
correctly: a step that finished is skipped, one cut short is re-entered where it stopped."""

from __future__ import annotations

import time

from rollbackd import facts
from rollbackd.config import Duration
from rollbackd.deploy import DeployedRelease, Deployer
from rollbackd.deploy.ledger import Ledger
from rollbackd.errors import FatalError
from rollbackd.plan import BaseStep, StepContext, StepOptions
from rollbackd.records import JSON, Release
from rollbackd.releases import release_from_target


class DeployStepOptions(StepOptions):
    health_timeout: Duration | None = None  # default: the deploy section's health_timeout


def _deployer(ctx: StepContext) -> Deployer:
    deployer = ctx.runtime.caps.deployer
    if deployer is None:
        raise FatalError(f"service {ctx.service} has no `deploy:` section: nothing can redeploy its code")
    return deployer


def _ledger(ctx: StepContext) -> Ledger:
    ledger = ctx.runtime.caps.releases
    if ledger is None:
        raise FatalError(f"service {ctx.service} has no release registry")
    return ledger


async def _arrived(ctx: StepContext, release: Release, current: DeployedRelease) -> bool:
    deployer, ledger = _deployer(ctx), _ledger(ctx)
    ran = current.matches(release) or ctx.fact(facts.DEPLOY_DONE) == release.version
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
        target = ctx.fact(facts.TARGET)
        if target is None or target.version is None:
            raise FatalError("the incident has no target release: nothing to redeploy")
        return release_from_target(ctx.service, target)

    def _why(self, ctx: StepContext) -> str:
        target = ctx.fact(facts.TARGET)
        return (target.why if target is not None else "") or "named by the incident"

    async def is_done(self, ctx: StepContext) -> bool:
        return await _arrived(ctx, self._target(ctx), await _deployer(ctx).current())

    async def run(self, ctx: StepContext) -> JSON:
        target, deployer, ledger = self._target(ctx), _deployer(ctx), _ledger(ctx)
        started = time.monotonic()
        await ledger.observe()  # the bad release is in the registry even if the pipeline forgot it
        before = await deployer.current()
        origin = ctx.fact(facts.DEPLOY_FROM)
        if origin is None:
            live = await ledger.live()
            origin = facts.DeployOrigin.from_json(
                {
                    **before.to_json(),
                    "release_id": live.id if live else None,
                    "version": live.version if live else before.version,
                }
            )
            await ctx.remember(facts.DEPLOY_FROM, origin)
        if ctx.fact(facts.DEPLOY_DONE) == target.version:
            result: JSON = {"noop": True, "resumed": True}
        else:
            result = await deployer.deploy(await ledger.with_spec(target), incident=ctx.incident.id)
        timeout = getattr(self.options, "health_timeout", None) or deployer.options.health_timeout
        health = await deployer.wait_healthy(time.monotonic() + timeout)
        await ctx.remember(facts.DEPLOY_DONE, target.version)
        await ledger.moved(
            target, actor="rollbackd", note=f"rolled back by incident {ctx.incident.id}", old_status="rolled_back"
        )
        was = origin.version
        verb = "already ran" if result.get("noop") else "redeployed"
        why = self._why(ctx)
        spec = result.get("spec")
        note = f" ({spec})" if spec and spec != "recorded" else ""
        return {
            **result,
            **health,
            "from": was,
            "to": target.version,
            "why": why,
            "step_to_healthy_s": round(time.monotonic() - started, 3),
            "summary": f"{target.version} {verb} (was {was}); healthy. Why {target.version}: {why}{note}",
        }


class RollForwardDeploy(BaseStep):
    type = "deploy.roll_forward"
    Options = DeployStepOptions

    def describe(self) -> str:
        return "undo a code rollback: start the release it replaced again (the kept container)"

    async def _back_to(self, ctx: StepContext) -> tuple[str, Release | None]:
        of = ctx.fact(facts.ROLLFORWARD_OF)
        if not of:
            raise FatalError("deploy.roll_forward needs `rollforward_of` in the incident context")
        original = await _ledger(ctx).store.get_incident(of)
        if original is None:
            raise FatalError(f"no incident {of} to roll forward")
        before = facts.DEPLOY_FROM.of(original.context)
        if before is None or not before.version:
            return of, None
        ledger = _ledger(ctx)
        release = await ledger.by_id(before.release_id) if before.release_id else None
        return of, release or Release(
            service=ctx.service, version=before.version, image=before.image, digest=before.image_id
        )

    async def is_done(self, ctx: StepContext) -> bool:
        _, release = await self._back_to(ctx)
        return release is None or await _arrived(ctx, release, await _deployer(ctx).current())

    async def run(self, ctx: StepContext) -> JSON:
        of, release = await self._back_to(ctx)
        if release is None:
            return {"noop": True, "summary": f"incident {of} did not redeploy code: nothing to roll forward"}
        deployer, ledger = _deployer(ctx), _ledger(ctx)
        started = time.monotonic()
        if ctx.fact(facts.DEPLOY_DONE) == release.version:
            result: JSON = {"noop": True, "resumed": True}
        else:
            result = await deployer.roll_forward(of, release, incident=ctx.incident.id)
        timeout = getattr(self.options, "health_timeout", None) or deployer.options.health_timeout
        health = await deployer.wait_healthy(time.monotonic() + timeout)
        await ctx.remember(facts.DEPLOY_DONE, release.version)
        if release.id is not None:
            await ledger.moved(
                release,
                actor="rollbackd",
                note=f"rolled forward by incident {ctx.incident.id}",
                old_status="superseded",
            )
        return {
            **result,
            **health,
            "to": release.version,
            "step_to_healthy_s": round(time.monotonic() - started, 3),
            "summary": f"rolled forward to {release.version} (undoing incident {of}); healthy",
        }
