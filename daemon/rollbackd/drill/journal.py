"""What a running drill made, journaled before it is made, so a daemon killed mid-drill (kill -9, OOM,
a SIGTERM whose teardown overran) cleans up when it next leads (a single node: its next start; with
replicas: whichever takes the lead) and reports the drill as NO-GO "interrupted" instead of never
reporting it at all.

The record (``drill.running.<service>`` in the state store) holds the drill id, its snapshot set once
picked, the prepared copies once prepared, the scratch container's name before it is created. It is
cleared only when a teardown completed. Sweeping never drops what the servers say is live, and leaves
the data copies alone while an incident of the service is active (its copies may share the names).

Also here: the page sent when a drill finds the live data changed (isolation breach).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from rollbackd.records import JSON

if TYPE_CHECKING:
    from rollbackd.drill.runner import Drill, DrillState

log = logging.getLogger(__name__)


INSTALLATION_KEY = "rollbackd.installation"


def running_key(service: str) -> str:
    return f"drill.running.{service}"


async def installation(store: Any) -> str:
    """This installation's id (one per state store, shared by its replicas; made on first use): a
    scratch container carries it, so a sweep takes only its own installation's leftovers, never the
    container of another daemon drilling on the same container engine now."""
    found = await store.get_kv(INSTALLATION_KEY)
    if isinstance(found, str) and found:
        return found
    return str(await store.add_kv(INSTALLATION_KEY, secrets.token_hex(8)))  # two replicas' first start: one id


async def write(drill: Drill, state: DrillState) -> None:
    """Journal what the drill has (or is about to have) made; raises if the journal cannot be written:
    a drill that could not be cleaned up after a crash must not create anything."""
    container = state.container.name if state.container is not None else None
    await drill.core.store.set_kv(
        running_key(drill.service),
        {
            "id": state.id,
            "started_at": state.started_at,
            "reason": state.reason,
            "actor": state.actor,
            "snapshot_set": state.snapshot_set,
            "prepared": state.prepared,
            "container": container,
            "preparing": state.preparing,
        },
    )


async def clear(drill: Drill) -> None:
    await drill.core.store.set_kv(running_key(drill.service), None)


async def live_copies(data: Any, prepared: dict[str, JSON]) -> set[str]:
    """Stores whose "copy" the servers report as live (a copy named like the live data, after a rollback to the
    same set); all of them when the servers cannot say."""
    try:
        live = await live_names(data)
    except Exception:
        log.exception("drill_live_names_failed")
        return set(prepared)
    return {n for n, r in prepared.items() if copy_name(r) in live}


async def live_names(data: Any) -> set[str]:
    """Names the servers say are live now (never dropped by a sweep)."""
    names: set[str] = set()
    for info in (await data.live()).values():
        names |= {str(info[k]) for k in ("database", "collection", "alias") if info.get(k)}
    return names


async def set_copies(data: Any, set_id: str) -> dict[str, JSON]:
    """The copies a prepare of ``set_id`` left on the servers (for a prepare cut short: it returned nothing, but
    may have created them). Copy names are fresh per attempt (``<base>__rb_<set>_<hex>``), so they are found
    by asking each server for its orphan copies (neither live nor kept) of this set."""
    from rollbackd.snapshots import restored_name

    out: dict[str, JSON] = {}
    for name, snap in data.snapshotters.items():
        kind = getattr(snap, "kind", "")
        base = snap.database if kind == "postgres" else snap.alias if kind == "qdrant" else None
        if base is None:
            continue
        prefix = restored_name(base, set_id) + "_"
        for index, copy in enumerate(c for c in await snap.copies() if c.startswith(prefix)):
            key = name if index == 0 else f"{name}#{index}"
            out[key] = {"kind": kind, "database" if kind == "postgres" else "collection": copy, "store": name}
    return out


async def sweep_data(
    drill: Drill, prepared: dict[str, JSON], set_id: str | None, preparing: bool, *, guard_incident: bool = True
) -> tuple[list[str], list[str]]:
    """Drop the drill's data copies (recorded, or by name when prepare was cut short); (done, errors).
    ``guard_incident``: false only for the drill's own teardown, which holds the data lock."""
    data = drill.runtime.caps.snapshots
    copies = dict(prepared) or (await set_copies(data, set_id) if data is not None and set_id and preparing else {})
    if data is None or not copies:
        return [], []
    incident = await drill.active_incident() if guard_incident else None
    if incident is not None:
        return [], [
            f"copies {', '.join(copy_name(r) for r in copies.values())} left for retention: incident "
            f"{incident} is active and may own copies of the same name"
        ]
    live = await live_names(data)
    done, errors = [], []
    for store, restored in copies.items():
        name = copy_name(restored)
        if name in live:
            errors.append(f"{store} copy {name} is LIVE now: not dropped")
            continue
        try:
            snapshotter = data.snapshotters[str(restored.get("store") or store)]
            if await snapshotter.is_prepared(restored):
                await snapshotter.discard(restored)
                done.append(f"{store} copy {name} dropped")
        except Exception as exc:
            errors.append(f"{store} copy {name}: {exc}")
    return done, errors


def copy_name(restored: JSON) -> str:
    return str(restored.get("database") or restored.get("collection") or "?")


async def recover(drill: Drill) -> JSON | None:
    """On start: sweep what an interrupted drill left (container, copies) and report it NO-GO
    "interrupted"; None when no drill was running. The record stays when the sweep failed."""
    from rollbackd.drill import scratch
    from rollbackd.drill.report import NO_GO, record_report
    from rollbackd.drill.runner import DrillState
    from rollbackd.drill.stages import deployer_or_none

    record = await drill.core.store.get_kv(running_key(drill.service))
    if not isinstance(record, dict) or not record.get("id"):
        return None
    if record["id"] == drill.running_id:
        return None  # running here (asked for while this replica was taking the lead): not interrupted
    state = DrillState(
        id=str(record["id"]),
        reason=str(record.get("reason") or ""),
        actor=str(record.get("actor") or ""),
        started_at=float(record.get("started_at") or 0),
    )
    state.snapshot_set = record.get("snapshot_set")
    done: list[str] = []
    errors: list[str] = []
    deployer = deployer_or_none(drill)
    if record.get("container") and deployer is not None:  # first: nothing may use the copies while they go
        try:
            removed = await scratch.remove_named(deployer, str(record["container"]))
            done.append(f"container {record['container']} {'removed' if removed else 'already gone'}")
        except Exception as exc:
            errors.append(f"container {record['container']}: {exc}")
    swept, failed = await sweep_data(
        drill, dict(record.get("prepared") or {}), state.snapshot_set, bool(record.get("preparing"))
    )
    done, errors = done + swept, errors + failed
    state.stages.append(
        {"name": "teardown", "seconds": 0.0, "ok": not errors, "detail": "; ".join(errors + done) or "nothing was left"}
    )
    report = drill.report(
        state, NO_GO, "interrupted: the daemon stopped during the drill (swept on the next start)", not errors
    )
    await record_report(drill.core, report, drill.clock())
    if not errors:
        await clear(drill)
    log.warning("drill_interrupted_swept", extra={"drill_id": state.id, "swept": done, "errors": errors})
    return report


async def page_breach(drill: Drill, report: JSON) -> None:
    """The live data changed while a drill ran: tell humans now (Slack and the paging webhook)."""
    from rollbackd.incidents import escalate
    from rollbackd.notify import Message

    cfg = drill.runtime.config
    text = f"drill {report['id']} of {drill.service}: {report['reason']}"
    try:
        drill.core.notify.post(
            Message(
                kind="escalation",
                title=f"{drill.service}: the drill touched live data",
                service=drill.service,
                text=text,
                severity="danger",
                mention=cfg.escalate_mention,
            )
        )
    except Exception:  # a failed notification never hides the NO-GO
        log.exception("drill_breach_notify_failed")
    if cfg.page_webhook is not None:
        await escalate.page(
            cfg.page_webhook,
            {
                "event": "rollbackd.drill_isolation_breach",
                "service": drill.service,
                "incident_id": None,
                "drill_id": report["id"],
                "state": "NO-GO",
                "error": report["reason"],
                "summary": text,
                "changes": (report.get("isolation") or {}).get("changes", []),
            },
        )
