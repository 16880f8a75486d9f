"""The drill's stages (rollbackd.drill.runner runs them in order, times them and tears down after).
Each returns a one-line detail for the report, or raises StageFailed (NO-GO with that reason)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rollbackd import ports
from rollbackd.deploy import wait_urls
from rollbackd.deploy.docker import DockerDeployer
from rollbackd.drill import isolation, journal, scratch
from rollbackd.drill.options import render, values_of
from rollbackd.drill.runner import COUNTS_NOTE, StageFailed
from rollbackd.errors import BackendError
from rollbackd.releases import live_release
from rollbackd.verify import overall
from rollbackd.verify.suite import VerifySuite

if TYPE_CHECKING:
    from rollbackd.drill.runner import Drill, DrillState
    from rollbackd.snapshots.dataset import DataSet

_BAD = ("failed", "rolled_back")


async def pick(drill: Drill, state: DrillState) -> str:
    history = await drill.core.store.releases(drill.service, 500)
    green = next((r for r in history if r.green and r.status not in _BAD), None)
    if green is None:
        raise StageFailed("no green release: mark one green (`rollbackd release mark-green`) before drilling")
    if not (green.digest or green.image):
        raise StageFailed(f"green release {green.version} has neither image nor digest")
    data = _dataset(drill)
    snap = await data.latest(release=green.version, verified_only=True)
    whose = f"the newest verified one taken while {green.version} was live"
    if snap is None:
        snap = await data.latest(verified_only=True)
        whose = f"the newest verified one (none was taken while {green.version} was live)"
    if snap is None:
        raise StageFailed("no verified snapshot set: take one (`rollbackd snapshot create`) before drilling")
    live = live_release(history)
    state.snapshot_set = str(snap.id)
    state.release = {
        "version": green.version,
        "image": green.image,
        "digest": green.digest,
        "live": live.version if live else None,
    }
    try:
        state.live_before = await isolation.fingerprint(data, drill.options.live_writes)
    except Exception as exc:
        raise StageFailed(
            f"cannot fingerprint the live data, so the drill could not prove it left it alone: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    state.isolation["before"] = state.live_before
    await journal.write(drill, state)
    return (
        f"release {green.version} (newest green; live is {live.version if live else 'unknown'}), "
        f"snapshot set {snap.id} ({whose}, release {snap.release or '-'}); live data fingerprinted"
    )


def _dataset(drill: Drill) -> DataSet:
    data = drill.runtime.caps.snapshots
    if data is None:
        raise StageFailed("the service has no snapshots configured")
    return data


async def prepare(drill: Drill, state: DrillState) -> str:
    data = _dataset(drill)
    assert state.snapshot_set is not None
    # Copies get fresh names per attempt and the snapshotters ask the servers before dropping anything, so
    # a drill of the set a rollback restored (whose copy is live) never touches the live copy.
    state.preparing = True  # from here a crash or the teardown sweeps the set's copies by name
    await journal.write(drill, state)
    try:
        prepared = await asyncio.wait_for(data.prepare(state.snapshot_set), drill.options.prepare_timeout)
    except TimeoutError as exc:
        raise StageFailed(f"not prepared within {drill.options.prepare_timeout:g}s") from exc
    state.prepared = prepared  # from here the teardown discards them
    state.preparing = False
    await journal.write(drill, state)
    state.notes.append(COUNTS_NOTE)
    state.scratch["data"] = {n: journal.copy_name(r) for n, r in prepared.items()}
    return (
        "restored aside: "
        + ", ".join(f"{n} -> {journal.copy_name(r)}" for n, r in prepared.items())
        + "; counts checked"
    )


def _no_password(dsn: str) -> str:
    """A DSN for the report: the password never leaves the daemon."""
    head, at, tail = dsn.rpartition("@")
    scheme, sep, user = head.partition("://")
    return f"{scheme}{sep}{user.split(':', 1)[0]}{at}{tail}" if at else dsn


def deployer_or_none(drill: Drill) -> DockerDeployer | None:
    deployer = drill.runtime.caps.deployer
    return deployer if isinstance(deployer, DockerDeployer) else None


def _deployer(drill: Drill) -> DockerDeployer:
    deployer = deployer_or_none(drill)
    if deployer is None:
        raise StageFailed("the drill needs a docker deployer (deploy.type: docker)")
    return deployer


async def deploy(drill: Drill, state: DrillState) -> str:
    deployer = _deployer(drill)
    opts = drill.options
    live_name = opts.container or deployer.options.containers[0].name
    installation = await journal.installation(drill.core.store)
    container = scratch.ScratchContainer(deployer, live_name, state.id, drill.service, installation)
    live = await container.inspect_live()
    forbidden = scratch.live_ports(deployer, live)
    port = opts.port or ports.free_port()
    if port in forbidden:
        raise StageFailed(f"drill port {port} is a port of the live service; pick another `drill.port`")
    values = values_of(port, state.prepared)
    env = {k: render(v, values) for k, v in opts.env.items()}
    url = scratch.health_url(opts, deployer, values)
    assert state.release is not None
    ref = str(state.release["digest"] or state.release["image"])
    image_id, body, effective = await container.plan(live, ref, env, port, opts.container_port)
    problems = isolation.references(effective, state.live_before or {}, state.prepared, scratch.live_urls(deployer))
    state.isolation["container"] = problems or "every database and collection it is given is a scratch copy"
    if problems:
        raise StageFailed("not isolated, the scratch container was not started: " + "; ".join(problems))
    state.container = container  # from here the teardown removes it; journaled before it exists
    await journal.write(drill, state)
    started = await container.start(image_id, body, port)
    state.scratch["container"] = {**started, "health_url": url, "live_container": live["Id"]}
    try:
        health = await wait_urls(
            [url], time.monotonic() + opts.health_timeout, opts.health_interval, f"scratch container {container.name}"
        )
    except BackendError as exc:
        raise StageFailed(f"{exc} ({await container.condition()})") from exc
    return (
        f"{container.name} on port {port} from image {started['image_id'][:19]}, healthy after "
        f"{health['healthy_after_s']:g}s at {url}"
    )


async def verify(drill: Drill, state: DrillState) -> str:
    deployer = _deployer(drill)
    port = int(state.scratch["container"]["port"])
    values = values_of(port, state.prepared)
    cfg = drill.runtime.config
    exact = scratch.dsn_rewrite(cfg.snapshots or {}, state.prepared)
    mapping = drill.options.rewrite if drill.options.rewrite is not None else scratch.derived_rewrite(deployer)
    mapping = {old: render(new, values) for old, new in mapping.items()}
    checks = scratch.scratch_checks(drill.service, cfg, drill.options, mapping, exact)
    if not checks:
        raise StageFailed("no check to run against the scratch copies (drill.checks)")
    # A check the rewrite missed would verify the LIVE service and call it the rehearsal's GO.
    strings = [
        (f"check {c.name}: {where}", v)
        for c in checks
        for where, v in isolation.option_strings(c.options.model_dump(mode="json"))
    ]
    problems, _ = isolation.live_references(
        strings, state.live_before or {}, scratch.live_urls(deployer), collections=False
    )
    if problems:
        raise StageFailed(
            "not isolated, the checks would look at the live service: " + "; ".join(problems) + " (set drill.rewrite)"
        )
    state.scratch["rewrite"] = {**mapping, **{_no_password(k): _no_password(v) for k, v in exact.items()}}
    suite = VerifySuite(
        service=drill.service,
        checks=checks,
        caps=drill.runtime.caps,
        prometheus=drill.core.prometheus,
        store=None,
        metrics=None,
        service_label=drill.core.settings.service_label,
    )
    try:
        results = await asyncio.wait_for(suite.run(), drill.options.verify_timeout)
    except TimeoutError as exc:
        raise StageFailed(f"checks not finished within {drill.options.verify_timeout:g}s") from exc
    finally:
        await suite.close()
    state.results = [r.to_json() for r in results]
    verdict = overall(results)
    lines = "; ".join(f"{r.verifier} {r.verdict.value.upper()}" for r in results)
    if verdict.value != "pass":
        bad = next((r for r in results if r.verdict.value != "pass" and not r.dry_run), results[0])
        raise StageFailed(f"{verdict.value.upper()}: {bad.verifier}: {bad.summary} ({lines})")
    return lines
