"""The container spec normaliser (pure): what the engine adds is dropped, what the operator set is kept,
and what could not be read is listed as a gap."""

from __future__ import annotations

from typing import Any

from rollbackd.deploy.spec import creation_body, normalise

ID = "a1b2c3d4e5f6" + "0" * 52
ANON = "f" * 64


def compat(**host: Any) -> dict[str, Any]:
    return {
        "Id": ID,
        "Image": "sha256:" + "1" * 64,
        "Config": {
            "Hostname": ID[:12],
            "User": "1000",
            "Env": ["B=2", "container=podman", f"HOSTNAME={ID[:12]}", "A=1"],
            "Cmd": ["/bin/sh"],
            "Entrypoint": [],
            "Labels": {"l": "v"},
            "StopTimeout": 7,
            "StopSignal": "15",
            "ExposedPorts": {"8080/tcp": {}},
        },
        "HostConfig": {
            "Binds": [f"{ANON}:/vol:rw", "named:/named:rw"],
            "NetworkMode": "bridge",
            "PidsLimit": 200,
            "MemorySwappiness": -1,
            "IpcMode": "shareable",
            "Memory": 0,
            "Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 1, "Hard": 2}],
            "LogConfig": {"Type": "k8s-file", "Config": None},
            **host,
        },
        "NetworkSettings": {"Networks": {"appnet": {"Aliases": ["web", ID[:12]]}}},
    }


LIBPOD = {"Config": {"StopTimeout": 7}, "HostConfig": {"LogConfig": {"Type": "k8s-file", "Size": "5MB", "Tag": ""}}}
IMAGE = {"RepoTags": ["localhost/web:v1"], "RepoDigests": ["localhost/web@sha256:" + "9" * 64]}


def test_normalise_keeps_the_operator_and_drops_the_engine() -> None:
    spec = normalise(compat(), LIBPOD, IMAGE, {"net.core.somaxconn": "1024"})
    cfg, host = spec["config"], spec["host_config"]
    assert cfg["Env"] == ["A=1", "B=2"]  # sorted; container= and the generated HOSTNAME dropped
    assert "Hostname" not in cfg and "Entrypoint" not in cfg and cfg["User"] == "1000" and cfg["StopTimeout"] == 7
    assert host["Binds"] == ["named:/named:rw"]  # an anonymous volume is the image's
    assert host["PidsLimit"] == 200 and "MemorySwappiness" not in host and "IpcMode" not in host
    assert "Memory" not in host
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1, "Hard": 2}]
    assert host["LogConfig"] == {"Type": "k8s-file", "Config": {"max-size": "5MB"}}
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert spec["networks"] == {"appnet": ["web"]} and spec["gaps"] == []
    assert spec["image"] == "localhost/web:v1" and spec["repo_digests"] == IMAGE["RepoDigests"]


def test_what_could_not_be_read_is_a_gap() -> None:
    spec = normalise(compat(), {}, IMAGE, None)
    assert len(spec["gaps"]) == 2 and any("sysctls" in g for g in spec["gaps"])
    assert spec["host_config"]["LogConfig"] == {"Type": "k8s-file", "Config": {}}


def test_creation_body_recreates_the_spec_on_its_named_network() -> None:
    spec = normalise(compat(), LIBPOD, IMAGE, {})
    body = creation_body(spec)
    assert body["Image"] == spec["image_id"] and body["User"] == "1000" and body["Env"] == ["A=1", "B=2"]
    assert body["HostConfig"]["NetworkMode"] == "appnet"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": ["web"]}}}
    host_net = normalise(compat(NetworkMode="host"), LIBPOD, IMAGE, {})
    assert "NetworkingConfig" not in creation_body(host_net)
