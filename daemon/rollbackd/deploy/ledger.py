"""The release registry of one service (``runtime.caps.releases``): record, mark green (by
hand, or automatically after ``releases.green_after`` without a firing RAG alert and with verification
passing), notice running images no release describes, keep statuses as a rollback moves them, measure
and export the baseline, and list the compatibility matrix (releases with their snapshots).

A release is a container spec: when it is recorded, marked green or observed live, the spec of the
containers running it (rollbackd.deploy.spec) is kept beside its row (rb_kv ``release_spec:<service>:<id>``:
no schema change), and the revert recreates it. At decision time ``observe_now`` asks the engine once.

History is append-only (rb_release_history); every write is also a journal event with who and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, cast

from rollbackd import release_diff, releases
from rollbackd.capabilities import Capabilities
from rollbackd.deploy import BaselineOptions, Deployer, same_digest
from rollbackd.deploy.baseline import measure, verification_passed, window_text
from rollbackd.errors import NotFoundError, PayloadError, RollbackdError
from rollbackd.metrics import Metrics
from rollbackd.prom import Prometheus, selector
from rollbackd.reasons import EventKind
from rollbackd.records import JSON, Event, Release, iso
from rollbackd.releases import release_json
from rollbackd.state import EventLog, IncidentJournal, KvStore, ReleaseStore

log = logging.getLogger(__name__)
OBSERVE_CACHE_S = 0.2  # one inspect per alert burst; a deploy is never within 0.2 s of its alert


class LedgerStore(ReleaseStore, EventLog, KvStore, IncidentJournal, Protocol):
    """What the registry uses of the journal; the deploy steps read incidents through it."""


class Ledger:
    def __init__(
        self,
        *,
        service: str,
        store: LedgerStore,
        metrics: Metrics,
        prometheus: Prometheus | None,
        baseline: BaselineOptions,
        green_after: float | None,
        service_label: str = "service",
        deployer: Deployer | None = None,
        caps: Capabilities | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.store = store
        self.metrics = metrics
        self.prometheus = prometheus
        self.baseline = baseline
        self.green_after = green_after
        self.service_label = service_label
        self.deployer = deployer
        self.caps = caps if caps is not None else Capabilities()  # the service's: snapshots, verify
        self.clock = clock
        self._observed_at = -OBSERVE_CACHE_S
        self._observed_image: str | None = None
        self._known: set[str] = set()  # digests of recorded releases (append-only: never stale)
        # record and observe are check-then-write: one at a time, or observe (which read the history before a
        # rollout recorded its release) records the same running image again and supersedes the real record
        self._writing = asyncio.Lock()

    # ---- reading --------------------------------------------------------------------------------
    async def history(self) -> list[Release]:
        return await self.store.releases(self.service, 500)

    async def live(self) -> Release | None:
        return releases.live_release(await self.history())

    async def find(self, version: str) -> Release:
        found = next((r for r in await self.history() if r.version == version), None)
        if found is None:
            raise NotFoundError(f"service {self.service} has no release {version!r}")
        return found

    async def by_id(self, release_id: int) -> Release | None:
        return next((r for r in await self.history() if r.id == release_id), None)

    async def matrix(self, limit: int = 50) -> JSON:
        """Releases newest first, each with its snapshot sets and baseline: the compatibility matrix."""
        history = (await self.history())[:limit]
        snaps: list[Any] = []
        source = self.caps.snapshots
        if source is not None:
            try:
                snaps = list(await source.list())
            except Exception as exc:  # the registry is still worth showing without its snapshots
                log.warning("matrix_snapshots_failed", exc_info=True, extra={"error": str(exc)})
        rows = []
        for r in history:
            mine = [s for s in snaps if getattr(s, "release", None) == r.version]
            rows.append(
                {
                    **release_json(r),
                    "snapshots": [
                        {
                            "id": str(s.id),
                            "created_at": _ts(getattr(s, "created_at", None)),
                            "verified": bool(getattr(s, "verified", False)),
                        }
                        for s in mine
                    ],
                }
            )
        live = releases.live_release(history)
        green = next((r for r in history if r.green), None)
        return {
            "service": self.service,
            "live": live.version if live else None,
            "last_green": green.version if green else None,
            "releases": rows,
        }

    async def diff(self, from_version: str, to_version: str) -> list[str]:
        """What going from ``from_version`` to ``to_version`` changes (rollbackd.release_diff)."""
        bad, green = await self.find(from_version), await self.find(to_version)
        data = None
        source = self.caps.snapshots
        if source is not None:
            try:
                snap = await source.latest(release=to_version, verified_only=True)
            except Exception as exc:  # the diff is still worth showing without the data line
                log.warning("diff_snapshot_failed", extra={"service": self.service, "error": str(exc)})
                snap = None
            if snap is not None:
                data = {"set": str(snap.id), "counts": release_diff.data_counts(getattr(snap, "manifests", {}))}
        return release_diff.changes(await self.with_spec(bad), await self.with_spec(green), data)

    # ---- writing --------------------------------------------------------------------------------
    async def record(
        self,
        *,
        version: str,
        image: str | None,
        digest: str | None,
        config_digest: str | None,
        schema_version: str | None,
        source: str,
        actor: str,
        reason: str,
        live_at: float | None = None,
    ) -> Release:
        """Append a deployed release. A tag alone is refused unless the deployer resolves its digest; a
        deployer that runs images (docker) must find the image on its host (else it could never deploy it)."""
        spec = {"image": image, "digest": digest, "config_digest": config_digest, "schema_version": schema_version}
        async with self._writing:
            return await self._append(self._new(version, source, actor, live_at=live_at, **spec), reason)

    async def record_unless_live(self, release: Release, *, source: str, actor: str, reason: str) -> Release:
        """Record ``release`` as deployed unless the live record already is that version (a resumed step, or the
        observe job that saw it run first under its label); one check-then-write."""
        async with self._writing:
            live = await self.live()
            if live is not None and live.version == release.version:
                return live
            r = release
            spec = {"image": r.image, "digest": r.digest, "config_digest": r.config_digest}
            return await self._append(
                self._new(r.version, source, actor, schema_version=r.schema_version, **spec), reason
            )

    def _new(self, version: str, source: str, actor: str, **fields: Any) -> Release:
        return Release(service=self.service, version=version, source=cast(Any, source), recorded_by=actor, **fields)

    async def _append(self, release: Release, reason: str) -> Release:
        problem = releases.version_problem(release.version)
        if problem is not None:
            raise PayloadError("version", problem)
        digest = await self._resolve(release.image, release.digest)
        live_at = release.live_at if release.live_at is not None else self.clock()
        release = await self.store.record_release(
            replace(release, service=self.service, digest=digest, live_at=live_at, status="deployed")
        )
        await self._event(EventKind.RELEASE_RECORDED, release.recorded_by or "rollbackd", reason, release)
        return await self.capture(release)

    async def _resolve(self, image: str | None, digest: str | None) -> str:
        if self.deployer is not None and getattr(self.deployer, "resolves_images", False) and (digest or image):
            ref = str(digest or image)
            found = await self.deployer.resolve(ref)
            if found is None:
                raise PayloadError(
                    "digest" if digest else "image",
                    f"{ref!r} does not resolve on the Docker host: a release must name an image the "
                    "host has (its image id, or repo@sha256 manifest digest of a pulled image)",
                )
            return found
        if image and not digest and self.deployer is not None:
            digest = await self.deployer.resolve(image)
        if not digest:
            what = f"image {image!r} is a tag the deployer cannot resolve" if image else "no image digest was given"
            raise PayloadError("digest", f"{what}: a release needs a digest (a tag can move)")
        return digest

    # ---- container specs (kept beside the release row: rb_kv, no schema change) --------------------
    def _spec_key(self, release_id: int) -> str:
        return f"release_spec:{self.service}:{release_id}"

    async def spec_of(self, release: Release) -> JSON | None:
        if release.id is None:
            return None
        found = await self.store.get_kv(self._spec_key(release.id))
        return found if isinstance(found, dict) else None

    async def with_spec(self, release: Release) -> Release:
        return release if release.spec is not None else replace(release, spec=await self.spec_of(release))

    async def capture(self, release: Release) -> Release:
        """Store the spec of the containers running ``release`` now (when they run it); best effort."""
        capture = getattr(self.deployer, "capture", None)
        if capture is None or release.id is None or not release.digest:
            return release
        try:
            specs = await capture()
        except RollbackdError as exc:
            log.warning("release_spec_failed", extra={"service": self.service, "error": str(exc)})
            return release
        if not specs or not all(same_digest(str(s.get("image_id") or ""), release.digest) for s in specs.values()):
            return release  # it does not run (yet): the observe job captures it once it does
        await self.store.set_kv(self._spec_key(release.id), specs)
        log.info(
            "release_spec_captured",
            extra={"service": self.service, "version": release.version, "containers": sorted(specs)},
        )
        return replace(release, spec=specs)

    async def mark_green(self, version: str, *, actor: str, reason: str) -> Release:
        """Mark the newest record of ``version`` green; measure its baseline when it is live."""
        release = await self.find(version)
        if release.green:
            return release
        fields: dict[str, Any] = {"green_at": self.clock(), "green_by": actor, "green_reason": reason}
        live = await self.live()
        if live is not None and live.id == release.id:
            p95 = await self._measure()
            if p95 is not None:
                fields["baseline_p95"] = p95
        release = await self.store.change_release(
            release.id or 0, change="green", actor=actor, note=reason, ts=self.clock(), **fields
        )
        await self._event(EventKind.RELEASE_GREEN, actor, reason, release)
        await self.export_baseline()
        return await self.capture(release)

    async def set_status(self, release: Release, status: str, *, actor: str, note: str, **fields: Any) -> Release:
        if release.id is None:
            raise NotFoundError(f"release {release.version} has no record")
        return await self.store.change_release(
            release.id, change=status, actor=actor, note=note, ts=self.clock(), **fields
        )

    async def moved(self, to: Release, *, actor: str, note: str, old_status: str) -> None:
        """``to`` runs now: the release that was live becomes ``old_status``; idempotent."""
        history = await self.history()
        live = releases.live_release(history)
        target = next((r for r in history if r.id == to.id), None) or await self.find(to.version)
        if live is not None and live.id != target.id:
            await self.set_status(live, old_status, actor=actor, note=note)
        if target.status != "deployed":
            await self.set_status(target, "deployed", actor=actor, note=note, live_at=self.clock())

    async def observe(self) -> Release | None:
        """Record the running image as an ``observed`` release when no release describes it."""
        if self.deployer is None:
            return None
        async with self._writing:
            return await self._observe(self.deployer)

    async def _observe(self, deployer: Deployer) -> Release | None:
        current = await deployer.current()
        if not current.image_id:
            return None
        known = next((r for r in await self.history() if r.digest and same_digest(r.digest, current.image_id)), None)
        if known is not None:
            if known.status == "deployed" and await self.spec_of(known) is None:
                await self.capture(known)  # recorded before it ran: its spec, now that it runs
            return None
        version = current.version
        if version is None or releases.version_problem(version) is not None:
            version = current.image_id.removeprefix("sha256:")[:12]
        log.info("release_observed", extra={"service": self.service, "version": version})
        found = self._new(version, "observed", "rollbackd", image=current.image, digest=current.image_id)
        return await self._append(found, "a running image that no release described")

    async def observe_now(self) -> None:
        """At decision time: record an unrecorded live container before it is judged. One container
        inspect (its answer reused for OBSERVE_CACHE_S: an alert storm asks once); a full observe
        only when the running image is one no release describes."""
        running = getattr(self.deployer, "running_image", None)
        if running is None:
            return
        try:
            if time.monotonic() - self._observed_at >= OBSERVE_CACHE_S:
                self._observed_image, self._observed_at = await running(), time.monotonic()
            image_id = self._observed_image
            if image_id is None or image_id.removeprefix("sha256:") in self._known:
                return
            self._known.update(r.digest.removeprefix("sha256:") for r in await self.history() if r.digest)
            if image_id.removeprefix("sha256:") not in self._known:
                await self.observe()
        except RollbackdError as exc:  # the decision goes on with what the registry knows
            log.warning("release_observe_failed", extra={"service": self.service, "error": str(exc)})

    # ---- green and baseline ---------------------------------------------------------------------
    async def auto_green(self) -> Release | None:
        """Mark the live release green once it ran ``green_after`` with no RAG alert of the service
        firing (Prometheus ALERTS) and verification passing (when the service has verification)."""
        live = await self.live()
        if self.green_after is None or live is None or live.green or self.prometheus is None:
            return None
        if live.live_at is None or self.clock() - live.live_at < self.green_after:
            return None
        alerts = selector("ALERTS", {"alertstate": "firing", self.service_label: self.service})
        expr = f'max_over_time({alerts[:-1]},alertname=~"RAG.*"}}[{window_text(self.green_after)}])'
        firing = await self.prometheus.query(expr)
        if firing:
            names = sorted({str(f["metric"].get("alertname")) for f in firing})
            log.info("auto_green_blocked", extra={"service": self.service, "alerts": names})
            return None
        if not await self._verified():
            return None
        return await self.mark_green(
            live.version, actor="rollbackd", reason=f"live for {window_text(self.green_after)} with no RAG alert firing"
        )

    async def _verified(self) -> bool:
        verify = self.caps.verify
        if verify is None:
            return True
        # every configured check but alert_cleared (no incident here: there is no alert to clear)
        checks = [c.name for c in verify.checks if c.type != "alert_cleared"]
        if not checks:
            return True
        return verification_passed(await verify.run(only=checks))

    async def _measure(self) -> float | None:
        if self.prometheus is None:
            return None
        try:
            return await measure(self.prometheus, self.baseline, self.service)
        except RollbackdError as exc:
            log.warning("baseline_failed", extra={"service": self.service, "error": str(exc)})
            return None

    async def refresh_baseline(self) -> float | None:
        """Re-measure the live release's baseline, only while it is green (a bad release never moves it)."""
        live = await self.live()
        if live is None or not live.green:
            await self.export_baseline()
            return None
        p95 = await self._measure()
        if p95 is not None:
            await self.store.change_release(
                live.id or 0,
                change="baseline",
                actor="rollbackd",
                note=f"refreshed: {p95:.4f}s",
                ts=self.clock(),
                baseline_p95=p95,
            )
        await self.export_baseline()
        return p95

    async def export_baseline(self) -> float | None:
        green = next((r for r in await self.history() if r.green and r.baseline_p95 is not None), None)
        if green is None or green.baseline_p95 is None:
            return None
        self.metrics.baseline_p95.labels(self.service).set(green.baseline_p95)
        return green.baseline_p95

    async def _event(self, kind: EventKind, actor: str, reason: str, release: Release) -> None:
        await self.store.append_event(
            Event(kind=kind, service=self.service, actor=actor, data={"why": reason, "release": release_json(release)})
        )


def _ts(value: Any) -> Any:
    return iso(value) if isinstance(value, int | float) else (str(value) if value is not None else None)
