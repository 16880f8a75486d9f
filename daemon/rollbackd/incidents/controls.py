"""What the on-call does by hand: trigger, abort, pause, resume. Each is journaled with who and why."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from rollbackd import facts
from rollbackd.errors import NotFoundError, PayloadError
from rollbackd.incidents.intake import Intake
from rollbackd.incidents.runner import Runner
from rollbackd.metrics import Metrics
from rollbackd.plan import ServiceRuntime
from rollbackd.reasons import EventKind, Reason
from rollbackd.records import Event, Incident, Pause, Trigger
from rollbackd.state import StateStore


class Refused(Exception):
    """A request that policy refuses (answered 409 with the reason)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason.sentence + (f" ({detail})" if detail else ""))


class Controls:
    def __init__(
        self,
        *,
        store: StateStore,
        services: Mapping[str, ServiceRuntime],
        intake: Intake,
        runner: Runner,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.services = services
        self.intake = intake
        self.runner = runner
        self.metrics = metrics
        self.clock = clock

    def service(self, name: str | None) -> ServiceRuntime:
        if name is None:
            if len(self.services) == 1:
                return next(iter(self.services.values()))
            raise PayloadError("service", f"more than one service is guarded; name one of {sorted(self.services)}")
        if name not in self.services:
            raise PayloadError("service", f"unknown service {name!r}; known: {', '.join(sorted(self.services))}")
        return self.services[name]

    async def trigger(
        self, service: str | None, *, reason: str, actor: str, dry_run: bool, to_release: str | None
    ) -> Incident:
        """A manual rollback. A human decided, so cooldown, budget, pause and hold do not apply;
        an incident already running does, and so does having nothing to roll back to."""
        runtime = self.service(service)
        async with self.intake.lock(runtime.name):
            view = await self.intake.view(runtime)
            if view.active_incident:
                raise Refused(Reason.INCIDENT_ACTIVE, view.active_incident)
            trigger = Trigger(
                kind="manual", reason=reason, requested_by=actor, received_at=self.clock(), to_release=to_release
            )
            incident = await self.intake.new_incident(runtime, trigger, dry_run=dry_run)
            if runtime.config.releases.track and facts.TARGET.of(incident.context) is None:
                refusal = facts.NO_TARGET.of(incident.context) or {}
                raise Refused(
                    Reason(refusal.get("reason", Reason.NOTHING_TO_ROLL_BACK_TO.value)), refusal.get("detail", "")
                )
            await self.opened(
                incident, EventKind.TRIGGER, actor, reason, {"dry_run": dry_run, "to_release": to_release}
            )
        self.runner.start(incident.id)
        return incident

    async def by_hand(
        self, runtime: ServiceRuntime, reason: str, actor: str, *, plan: list[dict[str, Any]], context: dict[str, Any]
    ) -> Incident:
        """An incident a human asks for with a plan and facts of its own (a roll-forward, a snapshot
        restore): no rollback target is looked up. Not journaled yet (``opened``)."""
        trigger = Trigger(kind="manual", reason=reason, requested_by=actor, received_at=self.clock())
        incident = await self.intake.new_incident(runtime, trigger, dry_run=False, found=(None, None))
        return dataclasses.replace(incident, plan=plan, context=context)

    async def opened(
        self, incident: Incident, kind: EventKind, actor: str, reason: str, data: dict[str, object]
    ) -> None:
        """Journal an incident a human opened and why (the caller holds the service's lock); refused when
        another incident of the service became active meanwhile (the store's one-active constraint)."""
        if not await self.store.create_incident(incident):
            raise Refused(Reason.INCIDENT_ACTIVE)
        await self._event(kind, incident.service, actor, reason, incident_id=incident.id, data=data)

    async def abort(self, incident_id: str, *, actor: str, reason: str) -> Incident:
        incident = await self.runner.abort(incident_id)
        if incident is None:
            raise NotFoundError(f"no incident {incident_id}")
        await self._event(EventKind.ABORT, incident.service, actor, reason, incident_id=incident_id)
        return incident

    async def pause(self, service: str | None, *, actor: str, reason: str, duration: float | None) -> Pause:
        name = "*" if service in (None, "*") else self.service(service).name
        now = self.clock()
        pause = Pause(
            service=name,
            kind="pause",
            reason=reason,
            actor=actor,
            created_at=now,
            until=now + duration if duration else None,
        )
        await self.store.set_pause(pause)
        self.metrics.paused.labels(name).set(1)
        await self._event(EventKind.PAUSE, name, actor, reason, data={"until": pause.until})
        return pause

    def resume_targets(self, service: str | None, *, every: bool = False) -> list[str]:
        """What `resume` lifts: the named service; with one service guarded, that one (the command the
        README and Slack give the on-call); with ``every``, all. The global pause ("*") goes too, unless
        one service is named."""
        if every:
            return ["*", *sorted(self.services)]
        if service == "*":
            return ["*"]
        if service is not None:
            return [self.service(service).name]
        return ["*", *(list(self.services) if len(self.services) == 1 else [])]

    async def resume(self, service: str | None, *, actor: str, reason: str, every: bool = False) -> dict[str, int]:
        """Lift pauses and holds (after a failed rollback someone must look, then resume); cleared by service."""
        cleared: dict[str, int] = {}
        for name in self.resume_targets(service, every=every):
            cleared[name] = await self.store.clear_pauses(name)
            self.metrics.paused.labels(name).set(0)
            if name != "*":
                self.metrics.held.labels(name).set(0)
            await self._event(EventKind.RESUME, name, actor, reason, data={"cleared": cleared[name]})
        return cleared

    async def _event(
        self,
        kind: EventKind,
        service: str,
        actor: str,
        reason: str,
        *,
        incident_id: str | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        await self.store.append_event(
            Event(
                kind=kind, service=service, incident_id=incident_id, actor=actor, data={"why": reason, **(data or {})}
            )
        )
