"""Alert in, decision journaled, incident opened: what happens before the webhook answers 202.

Each alert of a grouped notification is handled on its own, under its service's lock, so the policy
reads a consistent view. The alert, its decision, the incident and the journal line are written in
one transaction before the webhook answers; the rollback itself runs later, in the runner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rollbackd import facts, policy, releases
from rollbackd.config import Settings
from rollbackd.errors import IncidentActiveError
from rollbackd.incidents.batch import Body
from rollbackd.incidents.starts import Starts
from rollbackd.incidents.told import Tells, decision_event
from rollbackd.incidents.views import ViewCache, empty_view
from rollbackd.metrics import Metrics
from rollbackd.plan import ServiceRuntime, plan_to_json
from rollbackd.reasons import Action, IncidentState, Reason
from rollbackd.records import Alert, Decision, Incident, Pause, PolicyView, Trigger, new_incident_id
from rollbackd.state import StateStore
from rollbackd.state.group import GroupCommit, GroupRead, SeenReader

log = logging.getLogger(__name__)

_SEEN_MAX = 20_000  # alert keys known to be journaled: duplicates answered without a write


class IntakeRunner(Protocol):
    """What intake asks of the incident runner (rollbackd.incidents.runner.Runner; an acceptor's stand-in)."""

    @property
    def starts(self) -> Starts: ...

    def start(self, incident_id: str) -> Any: ...

    async def finish(self, incident: Incident, state: IncidentState, error: str | None) -> IncidentState: ...


class Intake:
    def __init__(
        self,
        *,
        settings: Settings,
        store: StateStore,
        services: Mapping[str, ServiceRuntime],
        runner: IntakeRunner,
        told: Tells,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.services = services
        self.runner = runner
        self.metrics = metrics
        self.clock = clock
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._unsettled: dict[str, asyncio.Future[None]] = {}  # decided, their body's commit not yet done
        self._duplicates: Counter[str] = Counter()
        self._classes: dict[tuple[str, str], Action] = {}  # (service, alertname) -> its policy list
        self.told = told
        self.views = ViewCache(store, clock)
        self.group = GroupCommit(store)  # rows of concurrent webhook requests share one commit
        self.seen_reads = GroupRead(store)  # and one "journaled already?" query

    def lock(self, service: str) -> asyncio.Lock:
        """The service's lock: decisions about one service are taken one at a time."""
        return self._locks[service]

    async def receive(self, alerts: list[Alert], received_at: float) -> list[Decision]:
        """Every alert of one webhook body; the ones that open no incident are written in one transaction."""
        if all(a.key in self._seen for a in alerts):  # Alertmanager's re-sends: nothing to decide or read
            return await self._duplicates_only(alerts)
        may_act = any(a.key not in self._seen and self._may_act(a) for a in alerts)
        if not may_act:
            if self.runner.starts:
                await self.runner.starts.step_aside()  # an incident is starting: it goes first (starts.py)
            # Firing alerts that cannot act are decided without a store read; the insert finds the ones
            # journaled before (Body.already). A resolution may cancel a pending incident before it is
            # journaled, so a body holding one reads first.
            fresh = all(a.status == "firing" for a in alerts if a.key not in self._seen)
            return await self._receive(alerts, received_at, None if fresh else self.seen_reads)
        token = f"body-{id(alerts)}"  # from now until its incident's first step, the storm steps aside
        self.runner.starts.begin(token)
        try:  # a body that may open an incident reads on its own, in the store's first lane (lanes.py)
            return await self._receive(alerts, received_at, self.store)
        finally:
            self.runner.starts.end(token)

    async def _receive(self, alerts: list[Alert], received_at: float, reader: SeenReader | None) -> list[Decision]:
        unknown = [a.key for a in alerts if a.key not in self._seen]
        body = await Body.read(reader, unknown)
        try:
            decisions = [await self.one(alert, received_at, body) for alert in alerts]
            await body.flush(self.group)
        except BaseException as exc:
            for key in body.keys:  # not journaled: Alertmanager's retry must decide them again
                self._seen.pop(key, None)
            self._settle(body, exc)
            raise
        self._settle(body, None)
        await body.journaled_elsewhere()
        if body.already:  # decided as new, found journaled by the insert: a duplicate after all
            return [
                self._duplicate(a, self._runtime(a)) if a.key in body.already else d
                for a, d in zip(alerts, decisions, strict=True)
            ]
        return decisions

    async def _duplicates_only(self, alerts: list[Alert]) -> list[Decision]:
        decisions = [self._duplicate(a, self._runtime(a)) for a in alerts]
        for key in {a.key for a in alerts}:
            settled = self._unsettled.get(key)
            if settled is not None:  # the original's commit is in flight: a 202 waits for it
                await asyncio.shield(settled)
        return decisions

    async def decides_alone(self, alerts: list[Alert]) -> bool:
        """Whether these alerts need nothing but config and the journal: an acceptor process
        (rollbackd.acceptor) decides those itself and hands the others to the daemon. None may ever
        roll back (notify-only, ignored, unknown service) or it is a copy known journaled; and a
        resolution must have no active incident its alert opened (only the daemon cancels one). An
        incident opened meanwhile cannot be its: only an alert that may roll back opens one."""
        if not all(a.key in self._seen or not self._rolls_back(a) for a in alerts):
            return False
        resolving = {
            (runtime.name, a.fingerprint)
            for a in alerts
            if a.status == "resolved" and a.key not in self._seen and (runtime := self._runtime(a)) is not None
        }
        if not resolving:
            return True
        opened_by = {(i.service, i.trigger.fingerprint) for i in await self.store.active_incidents()}
        return not resolving & opened_by

    def journaled(self, alerts: list[Alert]) -> None:
        """Journaled by another process (the daemon, for an acceptor): copies sent again are duplicates."""
        for alert in alerts:
            self._remember(alert.key)

    def _runtime(self, alert: Alert) -> ServiceRuntime | None:
        """The guarded service the alert names (its service label), if any."""
        return self.services.get(alert.labels.get(self.settings.service_label) or "")

    def _rolls_back(self, alert: Alert) -> bool:
        """The alert's kind is a rollback for a guarded service, firing or resolved."""
        runtime = self._runtime(alert)
        return runtime is not None and self._kind(alert, runtime) is Action.ROLLBACK

    def _may_act(self, alert: Alert) -> bool:
        runtime = self._runtime(alert)
        return runtime is not None and self._needs_view(alert, runtime)

    def _needs_view(self, alert: Alert, runtime: ServiceRuntime) -> bool:
        """Only an alert the policy would roll back for reads the view: notify-only and ignored ones cost no read."""
        return alert.status == "firing" and self._kind(alert, runtime) is Action.ROLLBACK

    def _kind(self, alert: Alert, runtime: ServiceRuntime) -> Action:
        """policy.classify, cached: shell patterns cost, and a storm repeats a few names thousands of times."""
        key = (runtime.name, alert.alertname)
        kind = self._classes.get(key)
        if kind is None:
            if len(self._classes) > _SEEN_MAX:
                self._classes.clear()
            kind = self._classes[key] = policy.classify(alert.alertname, runtime.config.policy)
        return kind

    def _settle(self, body: Body, error: BaseException | None) -> None:
        body.settle(error)
        for key in body.keys:
            if self._unsettled.get(key) is body.settled:
                del self._unsettled[key]

    async def one(self, alert: Alert, received_at: float, body: Body | None = None) -> Decision:
        runtime = self._runtime(alert)
        if alert.key in self._seen:
            return self._duplicate(alert, runtime, body)
        async with self._locks[runtime.name if runtime else ""]:
            if alert.key in self._seen or (  # journaled meanwhile, or before (read once per body)
                alert.key in body.known if body is not None else await self.store.seen_alert(alert.key)
            ):
                self._remember(alert.key)
                return self._duplicate(alert, runtime, body)
            decision, incident = await self._decide(alert, runtime, received_at)
            if incident is None and body is not None:
                service = runtime.name if runtime else None
                body.defer(
                    (alert, service, received_at, decision, decision_event(alert, decision, None)),
                    functools.partial(self.told.tell, alert, decision, None),
                )
                self._unsettled[alert.key] = body.settled
            else:
                decision, incident = await self._journal(alert, runtime, received_at, decision, incident, body)
            self._remember(alert.key)
            if alert.status == "resolved" and runtime is not None:
                await self._cancel_pending(runtime.name, alert, body)
        if incident is not None or body is None:
            await self.told.tell(alert, decision, incident)
        if incident is not None:
            self.runner.start(incident.id)
        return decision

    async def _found_view(self, runtime: ServiceRuntime) -> tuple[Any, PolicyView]:
        """The rollback target and policy view, from memory while no write changed them (views.py)."""
        cached = self.views.get(runtime.name)
        if cached is None:
            version = self.views.version(runtime.name)
            found = await self.target(runtime, None)
            cached = (found, await self.view(runtime, found))
            self.views.put(runtime.name, version, cached)
        return cached

    async def _decide(
        self, alert: Alert, runtime: ServiceRuntime | None, received_at: float
    ) -> tuple[Decision, Incident | None]:
        found, view = (
            await self._found_view(runtime)
            if runtime is not None and self._needs_view(alert, runtime)
            else (None, None)
        )
        decision = policy.decide(
            alert,
            service=runtime.name if runtime else None,
            policy=runtime.config.policy if runtime else None,
            view=view or (empty_view(runtime.name) if runtime else None),
            now=self.clock(),
            duplicate=False,
            global_dry_run=self.settings.mode == "dry_run",
            kind=self._kind(alert, runtime) if runtime is not None else None,
        )
        if runtime is not None and view is not None and decision.reason is Reason.INCIDENT_ACTIVE:
            from rollbackd.rollout.alerts import during_rollout  # a rollout decides it (not a second incident)

            decision = await during_rollout(self.store, alert, decision, view.active_incident, self.clock())
        if runtime is not None and found is not None and decision.reason is Reason.NOTHING_TO_ROLL_BACK_TO:
            decision = await self._no_target(runtime, decision, found[1])
        if runtime is None or not (decision.acts or decision.reason is Reason.DRY_RUN):
            return decision, None
        trigger = Trigger(
            kind="alert",
            reason=alert.alertname,
            requested_by="alertmanager",
            alertname=alert.alertname,
            fingerprint=alert.fingerprint,
            labels=alert.labels,
            annotations=alert.annotations,
            received_at=received_at,
        )
        return decision, await self.new_incident(runtime, trigger, dry_run=not decision.acts, found=found)

    async def target(
        self, runtime: ServiceRuntime, to_release: str | None
    ) -> tuple[releases.Target | None, releases.NoTarget | None]:
        """The rollback target, or why there is none (None, None: the service tracks no releases)."""
        try:
            return await releases.target_for(self.store, runtime, to_release), None
        except releases.NoTarget as refused:
            return None, refused

    async def new_incident(
        self,
        runtime: ServiceRuntime,
        trigger: Trigger,
        *,
        dry_run: bool,
        found: tuple[releases.Target | None, releases.NoTarget | None] | None = None,
    ) -> Incident:
        target, refused = found if found is not None else await self.target(runtime, trigger.to_release)
        context = facts.new_context()
        context[facts.TARGET.key] = None  # "no target" is a fact too: the incident was opened without one
        if target is not None:
            facts.TARGET.put(context, facts.TargetFact.from_json(target.to_json()))
        if refused is not None:
            facts.NO_TARGET.put(context, refused.to_json())
        return Incident(
            id=new_incident_id(self.clock()),
            service=runtime.name,
            state=IncidentState.PENDING,
            trigger=trigger,
            dry_run=dry_run,
            created_at=self.clock(),
            plan=plan_to_json(runtime.config.plan),
            context=context,
        )

    async def _no_target(
        self, runtime: ServiceRuntime, decision: Decision, refused: releases.NoTarget | None
    ) -> Decision:
        """Name why there is no target (nothing green, or a schema mismatch). A schema mismatch
        freezes the service (a hold, lifted by `rollbackd resume`) and pages: a human decides."""
        if refused is None:
            return decision
        if refused.reason is Reason.SCHEMA_MISMATCH:
            await self.store.set_pause(
                Pause(
                    service=runtime.name, kind="hold", reason=str(refused), actor="rollbackd", created_at=self.clock()
                )
            )
            self.metrics.held.labels(runtime.name).set(1)
        return Decision(Action.SUPPRESSED, refused.reason, runtime.name, refused.detail)

    async def _journal(
        self,
        alert: Alert,
        runtime: ServiceRuntime | None,
        received_at: float,
        decision: Decision,
        incident: Incident | None,
        body: Body | None = None,
    ) -> tuple[Decision, Incident | None]:
        service = runtime.name if runtime else None
        if body is not None and service is not None:
            await body.flush(self.group)  # the rows decided before it come first in the journal
            body.changed(service)
        try:
            await self.store.journal_alert(
                alert, service, received_at, decision, incident, decision_event(alert, decision, incident)
            )
        except IncidentActiveError:
            if incident is None:
                raise
            # Only the store's one-active-incident constraint lands here: another incident of the service
            # became active meanwhile (an HA peer). Any other store error propagates: the webhook answers
            # 503 and Alertmanager re-sends, so an outage never reads as "incident active".
            decision = Decision(Action.SUPPRESSED, Reason.INCIDENT_ACTIVE, service, "opened concurrently")
            incident = None
            await self.store.journal_alert(
                alert, service, received_at, decision, None, decision_event(alert, decision, None)
            )
        return decision, incident

    async def view(
        self, runtime: ServiceRuntime, found: tuple[releases.Target | None, releases.NoTarget | None] | None = None
    ) -> PolicyView:
        pol = runtime.config.policy
        view = await self.store.policy_view(runtime.name, self.clock(), pol.budget.window)
        if not runtime.config.releases.track:
            return view
        target, _ = found if found is not None else await self.target(runtime, None)
        return dataclasses.replace(view, has_target=target is not None)

    async def _cancel_pending(self, service: str, alert: Alert, body: Body | None = None) -> None:
        """A resolved alert cancels a rollback that has not started; never one in progress."""
        if body is not None:
            if not any(
                i.service == service and i.trigger.fingerprint == alert.fingerprint
                for i in await body.active_incidents(self.store)
            ):
                return
            body.changed(service)
        for incident in await self.store.active_incidents():
            if (
                incident.service == service
                and incident.state is IncidentState.PENDING
                and incident.trigger.fingerprint == alert.fingerprint
            ):
                await self.runner.finish(incident, IncidentState.CANCELLED, Reason.CANCELLED_BY_RESOLVE.sentence)

    def _duplicate(self, alert: Alert, runtime: ServiceRuntime | None, body: Body | None = None) -> Decision:
        settled = self._unsettled.get(alert.key)
        if settled is not None and body is not None and settled is not body.settled:
            body.waits.add(settled)  # the original is still being committed by another request
        self._duplicates[alert.key] += 1
        self.told.count(runtime.name if runtime else None, Action.SUPPRESSED, Reason.DUPLICATE)
        return Decision(Action.SUPPRESSED, Reason.DUPLICATE, runtime.name if runtime else None)

    async def flush_duplicates(self) -> None:
        """Duplicates are journaled as a count on the original alert, in batches (storms stay cheap)."""
        counts, self._duplicates = dict(self._duplicates), Counter()
        if counts:
            await self.store.add_duplicates(counts)

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
