"""Which release is live, which were green, and what a rollback goes back to.

The target is never "the previous release" (Helm's and Argo's ``undo`` trap: it may be the broken
one): it is the newest *green* release other than the live one (or the one a human names), with the
newest verified snapshot set taken while it was live. A green release without such a snapshot is a
code-only target, allowed only with ``releases.data: optional``, and refused when its schema version
differs from the live data's (the live release's): a migration that cannot be undone is never rolled
back blindly. Every choice carries its explanation (``why``), journaled with the incident.

``target_for`` returns the Target, None when the service does not track releases, or raises
NoTarget with the reason (nothing to roll back to, schema mismatch) and a detail sentence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rollbackd import release_diff
from rollbackd.facts import TargetFact
from rollbackd.reasons import Reason
from rollbackd.records import JSON, Release, iso

if TYPE_CHECKING:
    from rollbackd.deploy.ledger import Ledger
    from rollbackd.plan import ServiceRuntime
    from rollbackd.state import ReleaseStore

log = logging.getLogger(__name__)
_BAD = ("failed", "rolled_back")
VERSION_RULE = "1 to 128 characters: letters, digits and . _ + - : @, starting with a letter or digit, without '..'"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@-]{0,127}")


def version_problem(version: str) -> str | None:
    """None when ``version`` is a valid release version, else why not (no '/', control characters,
    bidi overrides or '..': a version is shown in status tables and used in names and paths)."""
    if _VERSION.fullmatch(version) is None or ".." in version:
        return f"release version {version!r} is invalid: {VERSION_RULE}"
    return None


class SnapshotLookup(Protocol):
    """What target selection needs of the snapshots resource (the data capability provides it)."""

    async def latest(self, *, release: str | None = None, verified_only: bool = True) -> Any: ...


class NoTarget(Exception):
    """There is nothing a rollback may go back to; ``reason`` is the policy's reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.sentence} ({detail})" if detail else reason.sentence)

    def to_json(self) -> JSON:
        return {"reason": self.reason.value, "detail": self.detail, "sentence": self.reason.sentence}


@dataclass(frozen=True, slots=True)
class Target:
    release: Release
    why: str
    snapshot_set: str | None = None
    code_only: bool = False
    data_counts: tuple[str, ...] = ()
    what_changed: tuple[str, ...] = ()  # bad (live) -> this release, rollbackd.release_diff

    def to_json(self) -> JSON:
        r = self.release
        return {
            "version": r.version,
            "image": r.image,
            "digest": r.digest,
            "release_id": r.id,
            "schema_version": r.schema_version,
            "snapshot_set": self.snapshot_set,
            "code_only": self.code_only,
            "why": self.why,
            "what_changed": list(self.what_changed),
        }


def live_release(history: Sequence[Release]) -> Release | None:
    """The newest release still marked deployed (history is newest first)."""
    return next((r for r in history if r.status == "deployed"), None)


def candidates(history: Sequence[Release], to_release: str | None = None) -> tuple[Release | None, list[Release]]:
    """The live release and, newest first, the releases a rollback may go to: green, not the live
    version, never failed or rolled back (one per version). A named release is the only candidate."""
    live = live_release(history)
    if to_release is not None:
        named = next((r for r in history if r.version == to_release), None)
        if named is None:
            raise NoTarget(Reason.NOTHING_TO_ROLL_BACK_TO, f"no release {to_release!r} is recorded")
        if live is not None and named.version == live.version:
            raise NoTarget(Reason.NOTHING_TO_ROLL_BACK_TO, f"{to_release} is the live release")
        return live, [named]
    seen: set[str] = set()
    out: list[Release] = []
    for release in history:
        if release.version in seen:
            continue
        seen.add(release.version)
        if release.green and release.status not in _BAD and (live is None or release.version != live.version):
            out.append(release)
    return live, out


async def _snapshot_of(snapshots: SnapshotLookup | None, version: str) -> tuple[Any, str]:
    if snapshots is None:
        return None, "the service has no snapshots configured"
    try:
        snap = await snapshots.latest(release=version, verified_only=True)
    except Exception as exc:  # the snapshot store failing must not hide the reason
        log.warning("target_snapshot_lookup_failed", extra={"version": version, "error": str(exc)})
        return None, f"the snapshot lookup failed: {exc}"
    if snap is None:
        return None, f"no verified snapshot set was taken while {version} was live"
    return snap, ""


async def select_target(
    history: Sequence[Release],
    *,
    snapshots: SnapshotLookup | None,
    data: Literal["required", "optional"],
    to_release: str | None = None,
) -> Target:
    """The target, or NoTarget naming why there is none. Pure but for the snapshot lookups."""
    live, options = candidates(history, to_release)
    live_text = f"live is {live.version}" if live else "nothing is recorded as live"
    if not options:
        raise NoTarget(Reason.NOTHING_TO_ROLL_BACK_TO, f"no green release other than the live one ({live_text})")
    chosen = "asked for by name" if to_release else "newest green release other than the live one"
    skipped: list[str] = []
    for release in options:
        snap, missing = await _snapshot_of(snapshots, release.version)
        if snap is not None:
            why = (
                f"{release.version}: {chosen} ({live_text}); data from snapshot set {snap.id}, the newest "
                f"verified one taken while {release.version} was live"
            )
            return Target(
                release,
                _with_skips(why, skipped),
                snapshot_set=str(snap.id),
                data_counts=tuple(release_diff.data_counts(getattr(snap, "manifests", None) or {})),
            )
        if data == "required" and snapshots is not None:
            skipped.append(f"{release.version} ({missing})")
            continue
        _check_schema(release, live)
        why = (
            f"{release.version}: {chosen} ({live_text}); code only: {missing}, allowed by releases.data: "
            f"{data}; schema {release.schema_version or 'unknown'}"
        )
        return Target(release, _with_skips(why, skipped), code_only=True)
    raise NoTarget(
        Reason.NOTHING_TO_ROLL_BACK_TO,
        f"releases.data is required and no green release has a snapshot: {'; '.join(skipped)}",
    )


def _with_skips(why: str, skipped: list[str]) -> str:
    return why if not skipped else f"{why}; skipped newer green {', '.join(skipped)}"


def _check_schema(target: Release, live: Release | None) -> None:
    have = live.schema_version if live else None
    if have is not None and target.schema_version is not None and have != target.schema_version:
        raise NoTarget(
            Reason.SCHEMA_MISMATCH,
            f"{target.version} needs schema {target.schema_version} but the live data is at schema "
            f"{have} ({live.version if live else '?'}) and there is no snapshot of {target.version} "
            "to restore with it",
        )


async def target_for(store: ReleaseStore, runtime: ServiceRuntime, to_release: str | None) -> Target | None:
    """The rollback target of a service (None when it does not track releases); raises NoTarget."""
    cfg = runtime.config.releases
    if not cfg.track:
        return None
    ledger = runtime.caps.releases
    if ledger is not None:
        await ledger.observe_now()  # an unrecorded live container is recorded before it is judged
    history = await store.releases(runtime.name, 500)
    snapshots: SnapshotLookup | None = runtime.caps.snapshots
    target = await select_target(history, snapshots=snapshots, data=cfg.data, to_release=to_release)
    return await _with_changes(target, live_release(history), ledger)


async def _with_changes(target: Target, live: Release | None, ledger: Ledger | None) -> Target:
    """The target with what a rollback from the live release to it changes (specs from the ledger)."""
    if live is None:
        return target
    bad, green = live, target.release
    if ledger is not None:
        bad, green = await ledger.with_spec(live), await ledger.with_spec(green)
    data = {"set": target.snapshot_set, "counts": list(target.data_counts)} if target.snapshot_set else None
    return replace(target, what_changed=tuple(release_diff.changes(bad, green, data)))


def release_json(r: Release) -> JSON:
    """A release as the API answers it and the journal's release events carry it."""
    return {
        "id": r.id,
        "version": r.version,
        "image": r.image,
        "digest": r.digest,
        "config_digest": r.config_digest,
        "schema_version": r.schema_version,
        "source": r.source,
        "recorded_by": r.recorded_by,
        "live_at": iso(r.live_at),
        "status": r.status,
        "green": r.green,
        "green_at": iso(r.green_at),
        "green_by": r.green_by,
        "green_reason": r.green_reason,
        "baseline_p95_s": r.baseline_p95,
    }


def release_from_target(service: str, target: TargetFact) -> Release:
    """The release an incident's target names (its context's ``target`` fact)."""
    return Release(
        service=service,
        version=str(target.version),
        image=target.image,
        digest=target.digest,
        schema_version=target.schema_version,
        id=target.release_id,
    )
