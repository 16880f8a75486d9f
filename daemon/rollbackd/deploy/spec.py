"""A release's container spec: what a container ran with, captured from the engine, and the create
request that recreates it exactly.

A revert recreates the green release's *recorded* spec; it never derives settings from the bad
container (its inspected Env, Labels, User... are a merge of its image's values and the operator's, so a
``--user`` equal to the bad image's USER cannot be told from the image's). Podman's compat inspect lacks
some fields: the log size comes from the libpod endpoint (``/v4.0.0/libpod/containers/{id}/json``),
sysctls from the container's OCI config when this host can read it (no API shows them); a field that
could not be read is listed in ``gaps`` so the revert can say so.

Spec (JSON, ``SPEC_VERSION``): ``image_id``, ``image``, ``repo_digests``, ``config`` (create keys),
``host_config`` (create keys), ``networks`` (name -> aliases), ``gaps``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

SPEC_VERSION: Final = 1
CONFIG_KEYS: Final = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "Healthcheck",
    "ExposedPorts",
    "StopSignal",
    "StopTimeout",
    "Hostname",
    "Domainname",
    "Tty",
    "OpenStdin",
)
HOST_KEYS: Final = (
    "Binds",
    "PortBindings",
    "RestartPolicy",
    "NetworkMode",
    "ExtraHosts",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "CapAdd",
    "CapDrop",
    "Privileged",
    "ReadonlyRootfs",
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "OomScoreAdj",
    "OomKillDisable",
    "GroupAdd",
    "SecurityOpt",
    "Tmpfs",
    "Ulimits",
    "Init",
    "ShmSize",
    "Devices",
    "UsernsMode",
    "BlkioWeight",
    "Sysctls",
    "LogConfig",
)
# Engine defaults that inspect reports but a create request must not repeat (or that Podman rejects).
_ENGINE_DEFAULTS: Final = {"MemorySwappiness": -1, "IpcMode": "shareable", "PidMode": "private", "UTSMode": "private"}
_DEFAULT_NETS: Final = frozenset({"bridge", "podman", "default"})
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


def _own_name(ident: str, value: str) -> bool:
    """Podman's generated hostname / alias: a prefix of the container id."""
    return bool(value) and ident.startswith(value)


def _config(compat: dict[str, Any], libpod: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(compat.get("Config") or {})
    ident = str(compat.get("Id", ""))
    lcfg = libpod.get("Config") or {}
    if cfg.get("StopTimeout") is None and lcfg.get("StopTimeout") is not None:
        cfg["StopTimeout"] = lcfg["StopTimeout"]
    hostname = str(cfg.get("Hostname") or "")
    out = {k: cfg[k] for k in CONFIG_KEYS if k in cfg and not _empty(cfg[k])}
    if _own_name(ident, hostname):
        out.pop("Hostname", None)
    # the engine adds these at start; they are not part of what the operator asked for
    # (sorted: the engine's order varies and one key appears once)
    out["Env"] = sorted(
        e
        for e in cfg.get("Env") or []
        if e != "container=podman" and not (e.startswith("HOSTNAME=") and e[9:] == hostname)
    )
    if cfg.get("StopTimeout") == 0:
        out["StopTimeout"] = 0
    return out


def _log_config(compat_host: dict[str, Any], libpod_host: dict[str, Any]) -> dict[str, Any] | None:
    lib = libpod_host.get("LogConfig") or {}
    kind = lib.get("Type") or (compat_host.get("LogConfig") or {}).get("Type")
    if not kind:
        return None
    options = dict(lib.get("Config") or (compat_host.get("LogConfig") or {}).get("Config") or {})
    if lib.get("Size") and "max-size" not in options:
        options["max-size"] = str(lib["Size"])
    if lib.get("Tag") and "tag" not in options:
        options["tag"] = str(lib["Tag"])
    return {"Type": kind, "Config": options}


def _host(compat: dict[str, Any], libpod: dict[str, Any], sysctls: dict[str, str] | None) -> dict[str, Any]:
    host = dict(compat.get("HostConfig") or {})
    host["LogConfig"] = _log_config(host, libpod.get("HostConfig") or {})
    host["Sysctls"] = sysctls or host.get("Sysctls")
    # anonymous volumes (an image's VOLUME) are the image's: the green image brings its own
    host["Binds"] = [b for b in host.get("Binds") or [] if not _ANONYMOUS.match(b.partition(":")[0])]
    out = {k: host[k] for k in HOST_KEYS if not _empty(host.get(k)) and _ENGINE_DEFAULTS.get(k) != host.get(k)}
    if "Ulimits" in out:  # Podman inspects `RLIMIT_NOFILE`, and accepts only `nofile`
        out["Ulimits"] = [{**u, "Name": str(u["Name"]).lower().removeprefix("rlimit_")} for u in out["Ulimits"]]
    return out


def _networks(compat: dict[str, Any]) -> dict[str, list[str]]:
    ident = str(compat.get("Id", ""))
    nets = (compat.get("NetworkSettings") or {}).get("Networks") or {}
    return {net: [a for a in (ep or {}).get("Aliases") or [] if not _own_name(ident, a)] for net, ep in nets.items()}


def read_sysctls(libpod: dict[str, Any]) -> dict[str, str] | None:
    """The container's sysctls from its OCI config (no API shows them); None when unreadable here."""
    path = libpod.get("OCIConfigPath")
    if not path:
        return None
    try:
        with open(str(path), encoding="utf-8") as fh:
            found = (json.load(fh).get("linux") or {}).get("sysctl") or {}
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in found.items()}


def normalise(
    compat: dict[str, Any], libpod: dict[str, Any], image: dict[str, Any], sysctls: dict[str, str] | None
) -> dict[str, Any]:
    """The spec of one inspected container (compat and libpod inspections, its image's inspection)."""
    gaps = [] if libpod else ["libpod inspection unavailable: log options and stop timeout from the compat API"]
    if sysctls is None:
        gaps.append("sysctls: not readable on this host (Podman's API does not show them)")
    tags = image.get("RepoTags") or []
    return {
        "spec_version": SPEC_VERSION,
        "image_id": compat.get("Image"),
        "image": tags[0] if tags else None,
        "repo_digests": list(image.get("RepoDigests") or []),
        "config": _config(compat, libpod),
        "host_config": _host(compat, libpod, sysctls),
        "networks": _networks(compat),
        "gaps": gaps,
    }


def creation_body(spec: dict[str, Any]) -> dict[str, Any]:
    """The create request that recreates ``spec`` exactly (the image is the spec's own)."""
    host = dict(spec.get("host_config") or {})
    body: dict[str, Any] = {"Image": spec["image_id"], **(spec.get("config") or {}), "HostConfig": host}
    attach_networks(body, str(host.get("NetworkMode") or ""), spec.get("networks") or {})
    return body


def attach_networks(body: dict[str, Any], mode: str, aliases: dict[str, list[str]]) -> None:
    """Join ``body`` to its networks (name -> aliases), unless it shares the host's, none or another
    container's. A container whose mode names a default network but that is attached to a named one
    gets the named one as its mode (the engine would otherwise put it on the default bridge)."""
    if not aliases or mode in ("host", "none") or mode.startswith("container:"):
        return
    body["NetworkingConfig"] = {"EndpointsConfig": {n: {"Aliases": a} for n, a in aliases.items()}}
    named = [n for n in aliases if n not in _DEFAULT_NETS]
    if named and mode in _DEFAULT_NETS:
        body["HostConfig"]["NetworkMode"] = named[0]
