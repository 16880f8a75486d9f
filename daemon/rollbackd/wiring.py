"""Config -> built backends -> the core objects the API and the daemon use. Also the whole-config
backend validation behind `rollbackd check-config` (every `type:` known, every option valid)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbackd import config, plugins
from rollbackd.config import BackendRef, Settings
from rollbackd.errors import ConfigError
from rollbackd.incidents.confirm import Confirmer
from rollbackd.incidents.controls import Controls
from rollbackd.incidents.intake import Intake
from rollbackd.incidents.runner import Runner
from rollbackd.incidents.told import Teller
from rollbackd.metrics import Metrics
from rollbackd.notify import BACKENDS as NOTIFY_BACKENDS
from rollbackd.notify import Notifier
from rollbackd.notify.null import NullNotifier
from rollbackd.notify.queue import NotifyQueue
from rollbackd.plan import ServiceRuntime, build_plan
from rollbackd.prom import Prometheus
from rollbackd.registry import resolve, validate_options
from rollbackd.state import BACKENDS as STATE_BACKENDS
from rollbackd.state import StateStore


def load_settings(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """A config file read and checked whole: its shape (rollbackd.config), then every backend and plan."""
    return checked(config.load(path, env))


def parse_settings(text: str, env: Mapping[str, str]) -> Settings:
    return checked(config.parse(text, env))


def checked(settings: Settings) -> Settings:
    """``settings`` if every backend reference and plan is valid; else a ConfigError listing every problem."""
    problems = validate_backends(settings)
    if problems:
        raise ConfigError(problems[0].split(":")[0], problems[0], problems=problems)
    return settings


def build_backend(table: Any, ref: BackendRef, path: str) -> Any:
    cls = resolve(table, ref.type, path)
    return cls(validate_options(cls, ref.options(), path))


def _validate_ref(table: Any, ref: BackendRef, path: str) -> None:
    validate_options(resolve(table, ref.type, path), ref.options(), path)


def validate_backends(settings: Settings) -> list[str]:
    """Every problem of every backend reference and plan, without I/O."""
    problems: list[str] = []

    def check(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except ConfigError as exc:
            problems.extend(exc.problems)

    check(_validate_ref, STATE_BACKENDS, settings.state, "state")
    if settings.notify is not None:
        check(_validate_ref, NOTIFY_BACKENDS, settings.notify, "notify")
    for name, svc in settings.services.items():
        if svc.notify is not None:
            check(_validate_ref, NOTIFY_BACKENDS, svc.notify, f"services.{name}.notify")
        check(build_plan, svc.plan, f"services.{name}.plan")
        if svc.policy.confirm == "required" and settings.prometheus is None:
            problems.append(
                f"services.{name}.policy.confirm: `required` needs `prometheus.url` (or set confirm: best_effort | off)"
            )
    problems.extend(_journal_problems(settings))
    if settings.state.type == "postgres" and settings.incidents.kill_grace >= settings.ha.lease / 3:
        # A leader that steps down has a third of its lease before another replica takes over: its steps'
        # process groups must be dead by then, or a step could run on two hosts at once.
        problems.append(
            f"incidents.kill_grace: {settings.incidents.kill_grace:g}s must be shorter than a third "
            f"of ha.lease ({settings.ha.lease:g}s), or a step could outlive its replica's lease"
        )
    for plugin in plugins.having("validate"):
        problems.extend(plugin.validate(settings))
    return problems


def _journal_problems(settings: Settings) -> list[str]:
    """What the state store must allow: more than one replica, or acceptor processes beside the daemon."""
    problems: list[str] = []
    if settings.webhook.acceptors and settings.state.type == "sqlite" and _in_memory(settings.state.options()):
        problems.append(
            f"webhook.acceptors: {settings.webhook.acceptors} acceptor processes need a journal they can "
            "open too; an in-memory SQLite database is the daemon's alone (give state.path a file)"
        )
    if settings.ha.replicas > 1 and settings.state.type != "postgres":
        problems.append(
            f"ha.replicas: {settings.ha.replicas} replicas need the postgres state store "
            f"(state.type: postgres); {settings.state.type} is single node"
        )
    return problems


def _in_memory(options: Mapping[str, Any]) -> bool:
    path = str(options.get("path", ""))
    return path == ":memory:" or path.startswith("file::memory:")


@dataclass
class Core:
    settings: Settings
    store: StateStore
    services: dict[str, ServiceRuntime]
    metrics: Metrics
    notify: NotifyQueue
    runner: Runner
    told: Teller
    intake: Intake
    controls: Controls
    prometheus: Prometheus | None
    started_at: float

    async def start(self) -> None:
        await self.store.open()
        for plugin in plugins.having("start"):
            await plugin.start(self)
        self.notify.start()

    async def close(self) -> None:
        await self.runner.shutdown()
        for plugin in plugins.having("close"):
            await plugin.close(self)
        await self.intake.flush_duplicates()
        await self.notify.stop()
        if self.prometheus is not None:
            await self.prometheus.close()
        await self.store.close()


def build_core(settings: Settings, *, clock: Callable[[], float] = time.time) -> Core:
    checked(settings)  # settings from config.parse know their shape, not their backends
    store: StateStore = build_backend(STATE_BACKENDS, settings.state, "state")
    services = {name: ServiceRuntime(name=name, config=svc) for name, svc in settings.services.items()}
    metrics = Metrics(services)
    default: Notifier = build_backend(NOTIFY_BACKENDS, settings.notify, "notify") if settings.notify else NullNotifier()
    notifiers: dict[str, Notifier] = {}
    for name, svc in settings.services.items():
        if svc.notify is not None:
            notifiers[name] = build_backend(NOTIFY_BACKENDS, svc.notify, f"services.{name}.notify")

    async def save_thread(incident_id: str, ref: dict[str, str]) -> None:
        await store.update_incident(incident_id, thread=ref)

    async def load_thread(incident_id: str) -> dict[str, str] | None:
        incident = await store.get_incident(incident_id)
        return incident.thread if incident else None

    notify = NotifyQueue(
        notifiers,
        default=default,
        maxsize=settings.notify_queue_size,
        save_thread=save_thread,
        load_thread=load_thread,
        on_failure=lambda name: metrics.notify_failures.labels(name).inc(),
        on_drop=lambda priority: metrics.notify_dropped.labels(priority).inc(),
        backoff_max=settings.notify_backoff_max,
    )
    prom_cfg = settings.prometheus
    prometheus = (
        Prometheus(
            prom_cfg.url,
            timeout=prom_cfg.timeout,
            bearer_token=prom_cfg.bearer_token.get_secret_value() if prom_cfg.bearer_token else None,
        )
        if prom_cfg
        else None
    )
    confirm = Confirmer(prometheus, services, settings.service_label)
    runner = Runner(
        store=store,
        services=services,
        notify=notify,
        metrics=metrics,
        confirm=confirm,
        clock=clock,
        store_outage_limit=settings.incidents.store_outage_limit,
        kill_grace=settings.incidents.kill_grace,
    )
    told = Teller(
        services=services,
        notify=notify,
        metrics=metrics,
        pager=runner.pager,
        coalesce_window=settings.notify_coalesce_window,
        clock=clock,
    )
    intake = Intake(
        settings=settings, store=store, services=services, runner=runner, told=told, metrics=metrics, clock=clock
    )
    controls = Controls(store=store, services=services, intake=intake, runner=runner, metrics=metrics, clock=clock)
    core = Core(
        settings=settings,
        store=store,
        services=services,
        metrics=metrics,
        notify=notify,
        runner=runner,
        told=told,
        intake=intake,
        controls=controls,
        prometheus=prometheus,
        started_at=clock(),
    )
    for plugin in plugins.having("build"):
        plugin.build(core)
    for plugin in plugins.having("finished"):  # the end of an incident, on the replica that ended it
        runner.on_finished.append(functools.partial(plugin.finished, core))
    for name, runtime in services.items():
        drill = runtime.caps.drill
        metrics.drill_scheduled.labels(name).set(1 if drill is not None and drill.options.schedule is not None else 0)
    return core
