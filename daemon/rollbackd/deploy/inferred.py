"""The pre-spec revert (a release recorded before container specs, or one with no spec): the create
request is *inferred* from the bad container, keeping its operator part (its value minus its image's).

Lossy by construction, and used only when no spec was recorded (the incident says so): an operator
value equal to the bad image's (``--user`` equal to its USER) is taken for the image's and dropped, and
the bad container's flags come along. See rollbackd.deploy.spec for the exact path.
"""

from __future__ import annotations

from typing import Any

from rollbackd.deploy.spec import attach_networks

ENGINE_ENV = frozenset({"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"})
_HOST_KEYS = (
    "Binds",
    "Mounts",
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
    "NanoCpus",
    "CpuShares",
    "SecurityOpt",
    "Tmpfs",
    "Ulimits",
    "Init",
    "ShmSize",
)
_CONFIG_KEYS = ("Cmd", "Entrypoint", "Healthcheck", "WorkingDir", "User")
_DEFAULTS = {"WorkingDir": "/"}


def operator_env(env: list[str] | None, image_env: list[str] | None, hostname: str | None) -> list[str]:
    """The container's environment minus its image's and the engine's own entries."""
    image = set(image_env or [])
    image_keys = {e.partition("=")[0] for e in image}
    out: list[str] = []
    for entry in env or []:
        key, _, value = entry.partition("=")
        engine = entry in ENGINE_ENV and key not in image_keys
        if entry in image or engine or key == "container" or (key == "HOSTNAME" and value == hostname):
            continue
        out.append(entry)
    return out


def creation_body(source: dict[str, Any], image_config: dict[str, Any], image_id: str) -> dict[str, Any]:
    """The create request for ``image_id`` keeping the operator's part of ``source`` (an inspection)."""
    cfg = source.get("Config") or {}
    host = source.get("HostConfig") or {}
    ident = str(source.get("Id", ""))
    body: dict[str, Any] = {
        "Image": image_id,
        **_operator_config(cfg, image_config, ident),
        "HostConfig": _operator_host(host),
    }
    networks = (source.get("NetworkSettings") or {}).get("Networks") or {}
    aliases = {
        net: [a for a in (ep or {}).get("Aliases") or [] if not ident.startswith(a)] for net, ep in networks.items()
    }  # the engine's own alias (the short id) is not the operator's
    attach_networks(body, str(host.get("NetworkMode") or ""), aliases)
    return body


def _operator_config(cfg: dict[str, Any], image_config: dict[str, Any], ident: str) -> dict[str, Any]:
    """Env, labels, ports and the config keys the operator set (not the image's, not the engine's defaults)."""
    image_labels = image_config.get("Labels") or {}
    out: dict[str, Any] = {
        "Env": operator_env(cfg.get("Env"), image_config.get("Env"), cfg.get("Hostname")),
        "Labels": {k: v for k, v in (cfg.get("Labels") or {}).items() if image_labels.get(k) != v},
        "ExposedPorts": cfg.get("ExposedPorts") or {},
    }
    for key in _CONFIG_KEYS:
        value = cfg.get(key)
        if value and value != image_config.get(key) and value != _DEFAULTS.get(key):
            out[key] = value
    hostname = cfg.get("Hostname")
    if hostname and not ident.startswith(hostname):  # an engine-made hostname is the id's start
        out["Hostname"] = hostname
    return out


def _operator_host(host: dict[str, Any]) -> dict[str, Any]:
    """The host config keys that were set; ulimits named as the create API accepts them."""
    out = {k: host[k] for k in _HOST_KEYS if host.get(k) not in (None, [], {}, "")}
    if "Ulimits" in out:  # Podman inspects `RLIMIT_NOFILE`, and accepts only `nofile`
        out["Ulimits"] = [{**u, "Name": str(u["Name"]).lower().removeprefix("rlimit_")} for u in out["Ulimits"]]
    return out
