"""What a rollback uses, checked with the backends' own clients: the Slack token and channel, the
Docker API and the service's containers, Postgres and Qdrant with the rights a rollback needs.
Heavy clients (slack_sdk, docker, asyncpg) are imported only when a service configures them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from rollbackd.doctor import Finding, fail, ok, skip, warn
from rollbackd.doctor.context import Context
from rollbackd.errors import BackendError

_RIGHTS_SQL = """
SELECT current_user AS me, r.rolcreatedb AS createdb, r.rolsuper AS superuser,
       pg_get_userbyid(d.datdba) AS owner
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"""


# ---- Slack -------------------------------------------------------------------------------------------
async def check_slack(ctx: Context) -> list[Finding]:
    groups: dict[tuple[str, ...], list[str]] = {}
    refs: dict[tuple[str, ...], dict[str, Any]] = {}
    for name in ctx.settings.services:
        ref = ctx.settings.notifier_for(name)
        options = ref.options() if ref is not None else {}
        key = (ref.type if ref else "null", *(str(options.get(k)) for k in ("bot_token", "channel", "base_url")))
        groups.setdefault(key, []).append(name)
        refs[key] = options
    return [await _slack_one(key[0], refs[key], ",".join(names)) for key, names in groups.items()]


async def _slack_one(kind: str, options: dict[str, Any], subject: str) -> Finding:
    if kind != "slack":
        return skip(
            "slack", f"notifier {kind}: rollbacks are reported in the journal and `rollbackd status` only", subject
        )
    if not options.get("bot_token"):
        return skip("slack", "an incoming webhook: not testable without posting a message", subject)
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    extra = {"base_url": options["base_url"]} if options.get("base_url") else {}
    client = AsyncWebClient(token=str(options["bot_token"]), timeout=int(options.get("timeout") or 10), **extra)
    channel = str(options.get("channel"))
    try:
        who = await client.auth_test()
        info = await client.conversations_info(channel=channel)
    except SlackApiError as exc:
        data = exc.response.data
        error = data.get("error") if isinstance(data, dict) else f"HTTP {exc.response.status_code}"
        return _slack_refused(str(error), channel, subject)
    except Exception as exc:  # connection errors of aiohttp, timeouts: Slack unreachable
        return fail(
            "slack",
            f"Slack does not answer: {type(exc).__name__}: {exc}",
            "check the network path to Slack (or notify.base_url)",
            subject,
        )
    name = (info.get("channel") or {}).get("name", channel)
    if not (info.get("channel") or {}).get("is_member", True):
        return warn(
            "slack",
            f"token valid ({who.get('user')}), but the bot is not in #{name}: posts fail with not_in_channel",
            f"invite the bot: /invite @{who.get('user')} in #{name}",
            subject,
        )
    scopes = _scopes(who.headers)
    if scopes is not None and not scopes & {"channels:history", "groups:history"}:
        return warn(
            "slack",
            f"token valid ({who.get('user')}), but without channels:history: a root message whose answer is lost "
            "cannot be found again, and a second root would split the incident's thread",
            "add the channels:history scope (groups:history for a private channel) to the Slack app, reinstall it",
            subject,
        )
    return ok("slack", f"token valid (bot {who.get('user')} of {who.get('team')}), channel #{name} reachable", subject)


def _scopes(headers: Any) -> set[str] | None:
    """The token's scopes from Slack's ``x-oauth-scopes`` answer header; None when it is not given."""
    found = next((v for k, v in dict(headers or {}).items() if k.lower() == "x-oauth-scopes"), None)
    if isinstance(found, list):
        found = ",".join(found)
    return None if found is None else {s.strip() for s in str(found).split(",") if s.strip()}


def _slack_refused(error: str, channel: str, subject: str) -> Finding:
    if error == "channel_not_found":
        return fail(
            "slack",
            f"channel {channel!r} not found (or the bot cannot see it)",
            "set notify.channel to the channel ID (C0..., not #name) and invite the bot",
            subject,
        )
    return fail(
        "slack", f"Slack refused the token: {error}", "set notify.bot_token to a valid bot token (xoxb-...)", subject
    )


# ---- Docker ------------------------------------------------------------------------------------------
def _docker_probe(host: str, names: list[str]) -> tuple[bool, str]:
    import docker
    from docker.errors import DockerException, NotFound
    from requests.exceptions import RequestException

    socket_path = host.removeprefix("unix://")
    if socket_path != host and not os.path.exists(socket_path):  # docker-py leaks a failed unix connect's socket
        return False, f"the Docker API at {host} does not answer: no such socket"
    try:
        client = docker.DockerClient(base_url=host, version="1.41", timeout=10)
    except DockerException as exc:
        return False, f"cannot use the Docker API at {host}: {exc}"
    try:
        client.ping()
        found, missing = [], []
        for name in names:
            try:
                found.append(f"{name} ({client.containers.get(name).status})")
            except NotFound:
                missing.append(name)
    except (DockerException, RequestException, OSError) as exc:
        return False, f"the Docker API at {host} does not answer: {exc}"
    finally:
        client.close()
    if missing:
        return False, f"the Docker API at {host} answers, but no container named {', '.join(missing)}"
    return True, f"the Docker API at {host} answers; container {', '.join(found)}"


async def check_docker(ctx: Context) -> list[Finding]:
    findings = []
    for name, svc in ctx.settings.services.items():
        deploy = svc.deploy or {}
        if deploy.get("type") != "docker":
            what = f"deploy type {deploy['type']}" if deploy.get("type") else "no deploy section"
            findings.append(skip("docker", f"{what}: no container engine to check", name))
            continue
        host = deploy.get("docker_host") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        names = [str(c.get("name")) for c in deploy.get("containers") or [] if isinstance(c, dict)]
        good, detail = await asyncio.to_thread(_docker_probe, host, names)
        findings.append(
            ok("docker", detail, name)
            if good
            else fail(
                "docker",
                detail,
                f"start the engine (Podman: podman system service) or fix services.{name}.deploy."
                "docker_host / DOCKER_HOST; deploy the service as the container named in deploy.containers",
                name,
            )
        )
    return findings


# ---- Postgres and Qdrant -----------------------------------------------------------------------------
def _stores(ctx: Context, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for name, svc in ctx.settings.services.items():
        for store, options in ((svc.snapshots or {}).get("stores") or {}).items():
            if isinstance(options, dict) and options.get("type") == kind:
                out.append((name, str(store), options))
    return out


async def check_postgres(ctx: Context) -> list[Finding]:
    stores = _stores(ctx, "postgres")
    if not stores:
        return [skip("postgres", "no postgres snapshot store configured")]
    return [await _postgres_one(service, store, options) for service, store, options in stores]


async def _postgres_one(service: str, store: str, options: dict[str, Any]) -> Finding:
    from rollbackd.snapshots.pgtools import Dsn, connect

    subject = f"{service}.{store}"
    dsn = Dsn.parse(str(options["dsn"]))
    if options.get("password"):
        dsn = dataclasses.replace(dsn, password=str(options["password"]))
    try:
        async with connect(dsn, timeout=10) as conn:
            row = await conn.fetchrow(_RIGHTS_SQL)
    except BackendError as exc:
        return fail(
            "postgres", str(exc), f"fix services.{service}.snapshots.stores.{store}.dsn, or start the server", subject
        )
    return _rights_finding(dsn.where(), dict(row), subject)


def _rights_finding(where: str, row: dict[str, Any], subject: str) -> Finding:
    me, superuser = row["me"], bool(row["superuser"])
    missing = []
    if not (row["createdb"] or superuser):
        missing.append("CREATEDB (the restore-aside copy is a new database)")
    if not (row["owner"] == me or superuser):
        missing.append(f"ownership of the live database (owned by {row['owner']}; the swap renames it)")
    if missing:
        return fail(
            "postgres",
            f"{where} as {me}: missing {'; '.join(missing)}",
            f"ALTER ROLE {me} CREATEDB; ALTER DATABASE ... OWNER TO {me} (or connect as the owner)",
            subject,
        )
    return ok("postgres", f"{where} as {me}: CREATEDB and owner of the live database", subject)


async def check_qdrant(ctx: Context) -> list[Finding]:
    stores = _stores(ctx, "qdrant")
    if not stores:
        return [skip("qdrant", "no qdrant snapshot store configured")]
    return [await _qdrant_one(ctx, service, store, options) for service, store, options in stores]


async def _qdrant_one(ctx: Context, service: str, store: str, options: dict[str, Any]) -> Finding:
    subject, url, alias = f"{service}.{store}", str(options["url"]).rstrip("/"), str(options["alias"])
    headers = {"api-key": str(options["api_key"])} if options.get("api_key") else {}
    fix_url = f"fix services.{service}.snapshots.stores.{store}.url / api_key"
    try:
        status, body = await ctx.request("qdrant", "GET", f"{url}/aliases", headers=headers)
        if status != 200:
            return fail("qdrant", f"GET {url}/aliases answered {status}: {str(body)[:200]}", fix_url, subject)
        aliases = {a["alias_name"]: a["collection_name"] for a in (body.get("result") or {}).get("aliases", [])}
        if alias not in aliases:
            return fail(
                "qdrant",
                f"{url}: alias {alias!r} does not exist: the application must read Qdrant through "
                "an alias for the swap to work",
                f"rollbackd snapshot adopt-alias --service {service} "
                "--reason ... (moves the collection behind an alias)",
                subject,
            )
        status, body = await ctx.request("qdrant", "GET", f"{url}/collections/{aliases[alias]}", headers=headers)
    except BackendError as exc:
        return fail("qdrant", str(exc), fix_url, subject)
    if status != 200:
        return fail(
            "qdrant",
            f"alias {alias} points to {aliases[alias]}, which answers {status}",
            "re-point the alias at a live collection (rollbackd snapshot adopt-alias)",
            subject,
        )
    points = (body.get("result") or {}).get("points_count")
    return ok("qdrant", f"{url}: alias {alias} -> collection {aliases[alias]} ({points} points)", subject)
