"""The facts steps share through an incident's context, one typed record per fact, read and written only
through the ``Fact`` accessors below (``StepContext.fact`` / ``StepContext.remember`` in steps).

The context is journaled as JSON with ``context_version``. Version 1 (before this module) had the same keys
and value shapes without the version; ``upgrade`` reads it, so an incident journaled by an older rollbackd
resumes. A later change of a fact's shape bumps CONTEXT_VERSION and converts in ``upgrade``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rollbackd.records import JSON

CONTEXT_VERSION = 2
VERSION_KEY = "context_version"

T = TypeVar("T")


class Fact(Generic[T]):
    """One key of the context and how its record is kept as JSON."""

    def __init__(self, key: str, decode: Callable[[Any], T], encode: Callable[[T], Any]) -> None:
        self.key = key
        self.decode = decode
        self.encode = encode

    def of(self, context: Mapping[str, Any]) -> T | None:
        raw = context.get(self.key)
        return None if raw is None else self.decode(raw)

    def put(self, context: JSON, value: T) -> None:
        context[self.key] = self.encode(value)
        context[VERSION_KEY] = CONTEXT_VERSION


def _same(value: Any) -> Any:
    return value


def scalar(key: str, kind: Callable[[Any], T]) -> Fact[T]:
    return Fact(key, kind, _same)


@dataclass(frozen=True, slots=True)
class TargetFact:
    """Where the incident rolls back to: a release (version...) and/or a snapshot set, and why."""

    version: str | None = None
    image: str | None = None
    digest: str | None = None
    release_id: int | None = None
    schema_version: str | None = None
    snapshot_set: str | None = None
    code_only: bool = False
    why: str = ""
    what_changed: tuple[str, ...] = ()

    def to_json(self) -> JSON:
        return {
            "version": self.version,
            "image": self.image,
            "digest": self.digest,
            "release_id": self.release_id,
            "schema_version": self.schema_version,
            "snapshot_set": self.snapshot_set,
            "code_only": self.code_only,
            "why": self.why,
            "what_changed": list(self.what_changed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TargetFact:
        version = data.get("version")
        return cls(
            version=None if version is None else str(version),
            image=data.get("image"),
            digest=data.get("digest"),
            release_id=data.get("release_id"),
            schema_version=data.get("schema_version"),
            snapshot_set=data.get("snapshot_set"),
            code_only=bool(data.get("code_only")),
            why=str(data.get("why") or ""),
            what_changed=tuple(data.get("what_changed") or ()),
        )


@dataclass(frozen=True, slots=True)
class DataTarget:
    """The snapshot set the data steps restore (None: a code-only target), chosen once."""

    snapshot_set: str | None

    def to_json(self) -> JSON:
        return {"snapshot_set": self.snapshot_set}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataTarget:
        return cls(data.get("snapshot_set"))


@dataclass(frozen=True, slots=True)
class DataPrepared:
    """The copies ``data.prepare`` restored aside, by store (each snapshotter's restored record)."""

    snapshot_set: str
    restored: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> JSON:
        return {"snapshot_set": self.snapshot_set, "restored": dict(self.restored)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataPrepared:
        return cls(str(data["snapshot_set"]), dict(data.get("restored") or {}))


@dataclass(frozen=True, slots=True)
class DeployOrigin:
    """What ran before ``deploy.revert`` (roll-forward goes back to it): the deployer's record of it."""

    version: str | None
    release_id: int | None = None
    image: str | None = None
    image_id: str | None = None
    deployed: JSON = field(default_factory=dict)  # the deployer's full record (DeployedRelease.to_json)

    def to_json(self) -> JSON:
        return {**self.deployed, "release_id": self.release_id, "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeployOrigin:
        return cls(
            version=data.get("version"),
            release_id=data.get("release_id"),
            image=data.get("image"),
            image_id=data.get("image_id"),
            deployed=dict(data),
        )


def _stores(value: Any) -> dict[str, JSON]:
    return {str(k): v for k, v in dict(value).items()}


TARGET: Fact[TargetFact] = Fact("target", TargetFact.from_json, TargetFact.to_json)
NO_TARGET: Fact[JSON] = scalar("no_target", dict)  # releases.NoTarget.to_json: why there is no target
DATA_TARGET: Fact[DataTarget] = Fact("data_target", DataTarget.from_json, DataTarget.to_json)
SAFETY_SNAPSHOT: Fact[str] = scalar("safety_snapshot", str)
DATA_PREPARED: Fact[DataPrepared] = Fact("data_prepared", DataPrepared.from_json, DataPrepared.to_json)
DATA_SWAPPED: Fact[dict[str, JSON]] = Fact("data_swapped", _stores, dict)  # by store: what its swap did
DATA_ROLLED_FORWARD: Fact[dict[str, JSON]] = Fact("data_rolled_forward", _stores, dict)
DEPLOY_FROM: Fact[DeployOrigin] = Fact("deploy_from", DeployOrigin.from_json, DeployOrigin.to_json)
DEPLOY_DONE: Fact[str] = scalar("deploy_done", str)  # the version a deploy of this incident finished
TRAFFIC_WEIGHT: Fact[int] = scalar("traffic_weight", int)  # the weight traffic.cut found
ROLLFORWARD_OF: Fact[str] = scalar("rollforward_of", str)  # the incident a roll-forward undoes
ALLOW_FOREIGN: Fact[str] = scalar("allow_foreign", str)  # a restore by hand may take this service's set
VERIFICATION: Fact[dict[str, JSON]] = Fact("verification", _stores, dict)  # by verify step: its verdict
ACT_LATENCY_OBSERVED: Fact[bool] = scalar("act_latency_observed", bool)
# A rollout's own record (release, green, baseline, phases with their gate readings, outcome; rollbackd.rollout),
# kept as the same JSON object so the rollout steps update it in place and save it whole.
ROLLOUT: Fact[JSON] = Fact("rollout", _same, _same)


def new_context() -> JSON:
    return {VERSION_KEY: CONTEXT_VERSION}


def upgrade(context: JSON) -> JSON:
    """A journaled context in the current version. Version 1 (no version key) had today's shapes."""
    version = context.get(VERSION_KEY, 1)
    if version > CONTEXT_VERSION:
        raise ValueError(f"incident context version {version} is newer than this rollbackd ({CONTEXT_VERSION})")
    return {**context, VERSION_KEY: CONTEXT_VERSION}
