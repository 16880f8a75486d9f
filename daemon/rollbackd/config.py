"""Configuration: YAML, validated whole at start and by ``rollbackd check-config``.

Unknown keys are errors; every error names its key path. Secrets come only from ``${ENV_VAR}`` or from
a ``<key>_file:`` path (systemd's LoadCredential puts them under ${CREDENTIALS_DIRECTORY}). Relative
paths are taken from the directory the daemon is started in. ``defaults.policy`` is merged under each
service's own ``policy``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from rollbackd import redact
from rollbackd.durations import parse_duration
from rollbackd.errors import ConfigError
from rollbackd.registry import format_loc

Duration = Annotated[float, BeforeValidator(parse_duration)]

SECRET_KEYS = frozenset(
    {"token", "webhook_token", "bot_token", "api_key", "password", "secret", "webhook_url", "dsn", "bearer_token"}
)
# Settings secret by where they are, not by their key: a paging URL often carries its routing key.
_SECRET_PATHS = re.compile(r"(?:^|\.)page_webhook\.url$")
_USERINFO_PASSWORD = re.compile(r"://[^/\s@:]*:([^/\s@]+)@")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
DEFAULT_ROLLBACK_ALERTS = (
    "RAGGateFailRateHigh",
    "RAGHTTP5xxRateHigh",
    "RAGLatencyP95Regression",
    "RAGFaithfulnessCritical",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendRef(BaseModel):
    """``type:`` plus that backend's own options, validated by the backend's ``Options`` model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StepConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    name: str | None = None
    timeout: Duration = 600.0
    retries: Annotated[int, Field(ge=0, le=20)] = 0
    backoff: Duration = 2.0
    # Attempts cut short by a crash or stop of the daemon are not failed attempts (they do not use up
    # `retries`); this bounds how often one step may be resumed that way before the incident fails.
    crash_resumes: Annotated[int, Field(ge=0, le=100)] = 3

    @property
    def step_name(self) -> str:
        return self.name or self.type

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ParallelGroup(Strict):
    parallel: Annotated[list[StepConfig], Field(min_length=1)]


PlanEntry = ParallelGroup | StepConfig


class ApiToken(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")]
    token: SecretStr


class AuthConfig(Strict):
    webhook_token: SecretStr
    api_tokens: Annotated[list[ApiToken], Field(min_length=1)]

    @field_validator("webhook_token")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("a token must be at least 16 characters")
        return v


class BudgetConfig(Strict):
    max: Annotated[int, Field(ge=0)] = 2
    window: Duration = 6 * 3600.0


class PolicyConfig(Strict):
    rollback_alerts: list[str] = list(DEFAULT_ROLLBACK_ALERTS)
    notify_alerts: list[str] = ["*"]  # "*": any other alert of the service
    ignore_alerts: list[str] = []
    cooldown: Duration = 1800.0
    budget: BudgetConfig = BudgetConfig()
    confirm: Literal["required", "best_effort", "off"] = "required"
    confirm_window: Duration = 60.0  # `required`: how long a Prometheus error is asked again before cancelling
    start_delay: Duration = 0.0
    dry_run: bool = False


class ReleasesConfig(Strict):
    track: bool = True  # off: the service has no release history; "nothing to roll back to" never applies
    data: Literal["required", "optional"] = "required"
    green_after: Duration | None = None


class PageWebhook(Strict):
    """Where to page when a rollback fails (body: rollbackd.incidents.escalate)."""

    url: SecretStr  # a paging URL often carries its routing key: from ${ENV} or url_file only
    headers: dict[str, SecretStr] = {}
    timeout: Duration = 10.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    # A page is journaled and re-sent (across restarts) until delivered; after this long it is given
    # up and logged as an error.
    give_up_after: Duration = 86400.0


class ServiceConfig(Strict):
    policy: PolicyConfig = PolicyConfig()
    notify: BackendRef | None = None
    plan: Annotated[list[PlanEntry], Field(min_length=1)]
    releases: ReleasesConfig = ReleasesConfig()
    escalate_mention: str | None = None  # e.g. "<!subteam^S123>" in Slack: who is called when it fails
    page_webhook: PageWebhook | None = None  # POSTed a JSON body when a rollback fails (rollbackd.incidents.escalate)
    # Capability sections, each validated by its capability's plugin (rollbackd.plugins).
    snapshots: dict[str, Any] | None = None
    deploy: dict[str, Any] | None = None
    traffic: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    drill: dict[str, Any] | None = None
    rollout: dict[str, Any] | None = None  # absent: the 1/10/50/100 canary plan (rollbackd.rollout.config)


class PrometheusConfig(Strict):
    url: str
    timeout: Duration = 5.0
    bearer_token: SecretStr | None = None


class AlertmanagerConfig(Strict):
    """Where Alertmanager answers: `rollbackd doctor` reads its routing and posts its test alert there."""

    url: str
    timeout: Duration = 5.0
    bearer_token: SecretStr | None = None


class IncidentsConfig(Strict):
    """How the runner lives through trouble of its own (README: "Store outages and crashes")."""

    # A journal write that fails is retried with backoff while the store is unreachable; after this
    # long the incident is given up: paged at once, ended `failed` (and held) as soon as the store answers.
    store_outage_limit: Duration = 300.0
    # Stopping a step's process group: SIGTERM, then SIGKILL after this grace.
    kill_grace: Duration = 3.0  # with postgres: shorter than a third of ha.lease (checked)


class JournalRetention(Strict):
    """Alert and event rows older than ``max_age`` that no incident refers to are pruned every
    ``interval`` (incidents, their steps and events are kept). ``max_age: null`` keeps everything."""

    max_age: Duration | None = 90 * 86400.0
    interval: Duration = 3600.0


class WebhookConfig(Strict):
    # Bodies already journaled, kept parsed so a re-sent copy costs no parsing; bounded by their size.
    body_cache_bytes: Annotated[int, Field(ge=0)] = 64 * 1_048_576
    # Processes beside the daemon's own that take webhook requests on its listen address (rollbackd.acceptor):
    # each decides and journals the storm's alerts that cannot act, and hands everything else to the daemon.
    # 0: the daemon alone. One per spare core lifts a storm of distinct alerts (README, Benchmarks).
    acceptors: Annotated[int, Field(ge=0, le=16)] = 0


class HaConfig(Strict):
    """Replicas on one Postgres journal (README "Running replicas"). With the postgres state store
    a leader is always elected (one replica is a replica set of one); SQLite is single node."""

    # How long a leader's lease lasts without renewal (renewed every third): a dead leader's
    # incidents are taken over within about this long.
    lease: Annotated[Duration, Field(gt=0, le=300)] = 10.0
    replica_id: str | None = None  # default: host:port of `listen` (unique per replica, stable over restarts)
    replicas: Annotated[int, Field(ge=1, le=9)] = 1  # how many you run: more than one needs postgres
    poll: Annotated[Duration, Field(gt=0, le=60)] = 1.0  # the leader looks for incidents opened by followers


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(Strict):
    listen: str = "127.0.0.1:8085"
    mode: Literal["auto", "dry_run"] = "auto"
    service_label: str = "service"
    state: BackendRef = BackendRef(type="sqlite", path="./var/rollbackd.db")  # type: ignore[call-arg]
    auth: AuthConfig
    prometheus: PrometheusConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    notify: BackendRef | None = None
    notify_queue_size: Annotated[int, Field(ge=10)] = 1000
    notify_backoff_max: Duration = 300.0  # longest wait of one notifier after a failure or a Retry-After
    notify_coalesce_window: Duration = 3600.0  # one message per service and suppression reason per window
    incidents: IncidentsConfig = IncidentsConfig()
    ha: HaConfig = HaConfig()
    log: LogConfig = LogConfig()
    journal_retention: JournalRetention = JournalRetention()
    webhook: WebhookConfig = WebhookConfig()
    services: Annotated[dict[str, ServiceConfig], Field(min_length=1)]

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        split_listen(v)
        return v

    @field_validator("services")
    @classmethod
    def _service_names(cls, v: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name) or name == "*":
                raise ValueError(f"service name {name!r}: use letters, digits, '.', '_' and '-'")
        return v

    def notifier_for(self, service: str) -> BackendRef | None:
        return self.services[service].notify or self.notify


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read, expand and validate a config file's shape; raises ConfigError listing every problem.
    Its backends (`type:` and options) are checked by ``rollbackd.wiring.load_settings``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    return parse(text, env if env is not None else os.environ)


def parse(text: str, env: Mapping[str, str]) -> Settings:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError("", "the config file must be a YAML mapping")
    problems: list[str] = []
    expanded = _expand(raw, "", env, problems)
    expanded = _merge_policy_defaults(expanded, problems)
    if problems:
        raise ConfigError(problems[0].split(":")[0], problems[0], problems=problems)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        problems = [f"{format_loc(e['loc']).lstrip('.')}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(problems[0].split(":")[0], problems[0], problems=problems) from exc
    return settings  # the shape only: backends are validated where they are built (rollbackd.wiring)


def _expand(node: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """Expand ${ENV} everywhere, read ``*_file`` keys, refuse literal secrets."""
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return _expand_scalar(node, path, env, problems)
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_path = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            problems.append(f"{key_path}: keys must be strings")
        elif key.endswith("_file") and _secret_kind(key_path[:-5], key[:-5]):
            secret = _read_secret_file(_expand_scalar(value, key_path, env, problems), key_path, problems)
            out[key[:-5]] = secret
            redact.register(secret)
        elif not _literal_secret(key_path, key, value, problems):
            out[key] = _expand(value, key_path, env, problems)
            if _secret_kind(key_path, key) and isinstance(out[key], str):
                redact.register(out[key], *(env.get(n) for n in _ENV_REF.findall(value)))  # masked wherever
    return out


def _secret_kind(path: str, key: str) -> str | None:
    """ "whole": the value must be one ${ENV} (or ``<key>_file``); "ref": it must use one (``Bearer
    ${TOKEN}``); None: not a secret. Keys named in SECRET_KEYS, credential headers, paging URLs."""
    if key in SECRET_KEYS or _SECRET_PATHS.search(path):
        return "whole"
    return "ref" if key.lower() in redact.SECRET_HEADERS else None


def _literal_secret(path: str, key: str, value: Any, problems: list[str]) -> bool:
    kind = _secret_kind(path, key)
    if kind is None or value is None:
        return False
    if _is_env_ref(value) or (kind == "ref" and isinstance(value, str) and _ENV_REF.search(value)):
        return False
    problems.append(f"{path}: a secret must come from ${{ENV_VAR}} or {key}_file, not a literal in the file")
    return True


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, str) and bool(_WHOLE_ENV_REF.match(value.strip()))


def _expand_scalar(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if not isinstance(value, str):
        return value
    literal = _USERINFO_PASSWORD.search(value)
    if literal and "${" not in literal.group(1):
        problems.append(f"{path}: a URL's password must come from ${{ENV_VAR}}, not a literal in the file")

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            problems.append(f"{path}: environment variable {name} is not set")
            return ""
        return env[name]

    expanded = _ENV_REF.sub(sub, value)
    redact.register(*_USERINFO_PASSWORD.findall(expanded))
    return expanded


def _read_secret_file(value: Any, path: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{path}: expected a file path")
        return None
    try:
        return Path(value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{path}: cannot read {value}: {exc.strerror}")
        return None


def _merge_policy_defaults(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    defaults = raw.pop("defaults", None) or {}
    if not isinstance(defaults, dict) or set(defaults) - {"policy"}:
        problems.append("defaults: only `defaults.policy` is supported")
        return raw
    base = defaults.get("policy") or {}
    services = raw.get("services")
    if not base or not isinstance(services, dict):
        return raw
    merged = {}
    for name, svc in services.items():
        if isinstance(svc, dict):
            svc = {**svc, "policy": _deep_merge(base, svc.get("policy") or {})}
        merged[name] = svc
    return {**raw, "services": merged}


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
