"""The one exception tree of rollbackd. Backends translate library errors at their boundary,
so the incident runner only ever catches RollbackdError.

    RollbackdError
    ├── ConfigError            bad configuration; names the key path (``services.rag.plan[2].type``)
    ├── PayloadError           a request body that is not what the API expects; names the field
    ├── StateError             the state store failed (unreachable, locked, corrupt row): retryable
    │   └── IncidentActiveError  the one-active-incident constraint refused a new incident (not retryable)
    ├── StepError              a plan step failed
    │   ├── RetryableError     worth another attempt (timeouts, 5xx, connection refused)
    │   └── FatalError         retrying cannot help (bad input, 4xx, precondition not met)
    ├── BackendError           a backend (snapshot, deploy, traffic, verify, notify) failed;
    │                          ``retryable`` says whether another attempt may help
    ├── FencedError            a stale leader's write, refused by the store (rollbackd.ha)
    └── NotFoundError          an incident, release or snapshot that does not exist
"""

from __future__ import annotations

from rollbackd import redact


class RollbackdError(Exception):
    """Base of every error rollbackd raises on purpose. Its text is redacted and cut (rollbackd.redact):
    a URL or a response body copied into an error reaches the journal, Slack and the page."""

    retryable: bool = False
    text_limit: int = 1000

    def __str__(self) -> str:
        return redact.text(super().__str__(), limit=self.text_limit)


class ConfigError(RollbackdError):
    """Configuration is invalid. ``path`` is the dotted key path, ``problems`` every error found."""

    text_limit = 100_000  # every problem is shown

    def __init__(self, path: str, message: str, *, problems: list[str] | None = None) -> None:
        self.path = path
        self.message = message
        self.problems = problems or [f"{path}: {message}" if path else message]
        super().__init__("\n".join(self.problems))


class PayloadError(RollbackdError):
    """A request body is invalid; ``field`` names where (``alerts[2].startsAt``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class StateError(RollbackdError):
    """The state store could not do what was asked."""

    retryable = True


class IncidentActiveError(StateError):
    """The store's one-active-incident constraint refused a new incident: another one of the same
    service is active. The only store error that means "incident active"; every other is an outage."""

    retryable = False


class StoreUnavailable(RollbackdError):
    """The state store stayed unreachable longer than the runner may wait (``incidents.store_outage_limit``)."""


class FencedError(RollbackdError):
    """This replica's fencing token is stale: another replica leads now; the write was refused (not retried)."""


class NotFoundError(RollbackdError):
    """The thing asked for does not exist."""


class StepError(RollbackdError):
    """A plan step failed."""


class RetryableError(StepError):
    retryable = True


class FatalError(StepError):
    retryable = False


class BackendError(RollbackdError):
    """A backend failed. ``backend`` names it (``postgres``, ``slack``), ``retryable`` whether to retry."""

    def __init__(
        self, backend: str, message: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        self.backend = backend
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the far end asked us to wait (HTTP 429 Retry-After)
        super().__init__(f"{backend}: {message}")
