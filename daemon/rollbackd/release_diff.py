"""What changed between two releases (the bad one and the one a rollback goes to), in lines a human reads
at 3 AM: image and digest, env keys added/removed/changed (values of secret-looking keys masked), user,
command, resources, mounts, schema version, and the data set with its counts. Pure; standard library
only (the CLI renders what the API computed).

Each line reads in the rollback's direction: ``FROM -> TO`` (what runs now -> what the rollback brings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rollbackd.records import JSON, Release

SECRET = re.compile(r"(?i)pass|secret|token|key|credential|auth|dsn|private|cookie|session")
MASK = "***"
RESOURCES = (
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpusetCpus",
    "PidsLimit",
    "OomScoreAdj",
    "ShmSize",
    "Ulimits",
    "Sysctls",
    "RestartPolicy",
    "ReadonlyRootfs",
    "CapAdd",
    "CapDrop",
    "SecurityOpt",
    "GroupAdd",
    "LogConfig",
    "PortBindings",
)


def _short(digest: str | None) -> str:
    return (digest or "-").removeprefix("sha256:")[:12] or "-"


def _image(release: Release) -> str:
    named = [s.get("image") for s in (release.spec or {}).values() if s.get("image")]
    return release.image or (str(named[0]) if named else "-")


def _value(key: str, value: str | None) -> str:
    if value is None:
        return "(unset)"
    return MASK if SECRET.search(key) else repr(value)


def _env(spec: Mapping[str, Any]) -> dict[str, str]:
    entries = (spec.get("config") or {}).get("Env") or []
    return dict(str(e).partition("=")[::2] for e in entries)


def env_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    out = [f"env {k} added: {_value(k, after[k])}" for k in sorted(set(after) - set(before))]
    out += [f"env {k} removed (was {_value(k, before[k])})" for k in sorted(set(before) - set(after))]
    out += [
        f"env {k}: {_value(k, before[k])} -> {_value(k, after[k])}"
        for k in sorted(set(before) & set(after))
        if before[k] != after[k]
    ]
    return out


def _pair(label: str, before: Any, after: Any) -> list[str]:
    return (
        []
        if before == after
        else [
            f"{label}: {before if before not in (None, '') else '(default)'} -> "
            f"{after if after not in (None, '') else '(default)'}"
        ]
    )


def spec_changes(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Differences between two container specs (rollbackd.deploy.spec)."""
    cfg_b, cfg_a = before.get("config") or {}, after.get("config") or {}
    host_b, host_a = before.get("host_config") or {}, after.get("host_config") or {}
    out = env_changes(_env(before), _env(after))
    out += _pair("user", cfg_b.get("User"), cfg_a.get("User"))
    out += _pair("cmd", cfg_b.get("Cmd"), cfg_a.get("Cmd"))
    out += _pair("entrypoint", cfg_b.get("Entrypoint"), cfg_a.get("Entrypoint"))
    out += _pair("healthcheck", cfg_b.get("Healthcheck"), cfg_a.get("Healthcheck"))
    for key in RESOURCES:
        out += _pair(key, host_b.get(key), host_a.get(key))
    out += _pair("mounts", sorted(host_b.get("Binds") or []), sorted(host_a.get("Binds") or []))
    return [prefix + line for line in out]


def _specs(bad: Release, green: Release) -> list[str]:
    if not bad.spec or not green.spec:
        missing = [r.version for r in (bad, green) if not r.spec]
        return [f"container settings: not compared (no spec recorded for {', '.join(missing)})"]
    names = sorted(set(bad.spec) | set(green.spec))
    out: list[str] = []
    for name in names:
        if name not in bad.spec or name not in green.spec:
            out.append(f"container {name}: only in {bad.version if name in bad.spec else green.version}")
            continue
        out += spec_changes(bad.spec[name], green.spec[name], f"{name}: " if len(names) > 1 else "")
    return out


def changes(bad: Release, green: Release, data: JSON | None = None) -> list[str]:
    """What a rollback from ``bad`` to ``green`` changes, one line each (bad -> green)."""
    out = [f"release: {bad.version} -> {green.version}"]
    if bad.digest != green.digest:
        out.append(f"image: {_image(bad)} ({_short(bad.digest)}) -> {_image(green)} ({_short(green.digest)})")
    out += _pair("schema version", bad.schema_version, green.schema_version)
    out += _specs(bad, green)
    if data:
        out.append(f"data: snapshot set {data.get('set')} ({'; '.join(data.get('counts') or []) or 'no counts'})")
    return out


def data_counts(manifests: Mapping[str, Any]) -> list[str]:
    """Counts of a snapshot set's manifests: rows per table, points per collection."""
    out: list[str] = []
    for store, manifest in sorted(manifests.items()):
        tables = (manifest or {}).get("tables") or {}
        if tables:
            out.append(f"{store}: " + ", ".join(f"{t} {m.get('rows')} rows" for t, m in sorted(tables.items())))
        for name, coll in sorted(((manifest or {}).get("collections") or {}).items()):
            out.append(f"{store}: {name} {(coll or {}).get('points')} points")
    return out
