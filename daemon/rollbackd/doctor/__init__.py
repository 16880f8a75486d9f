"""`rollbackd doctor`: prove the whole chain a rollback depends on, one check at a time.

Every check is a small async function ``check(ctx) -> list[Finding]`` (one finding per service or
store where that applies) in the module of its concern: ``prometheus`` (reachable, the service's
series with the service label, rules loaded, baseline, rollbackd scraped), ``alertmanager`` (routing
to this daemon with its token, the test alert), ``daemon`` (reachable, releases, snapshots, drill) and
``backends`` (Slack, Docker API, Postgres, Qdrant). A finding says what is wrong *and what to do*;
``run`` orders the checks (CHECKS) and turns an unreachable dependency into SKIP for the checks that
need it, so one cause is reported once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollbackd.doctor.context import Context


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but something will bite later (stale, unverified, not testable from here)
    FAIL = "fail"  # a link of the chain is broken: an alert would not lead to a rollback
    SKIP = "skip"  # not configured, or depends on a check that failed


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""
    subject: str = ""  # the service, store or notifier the finding is about ("" for global checks)

    @property
    def name(self) -> str:
        return f"{self.check}[{self.subject}]" if self.subject else self.check

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "subject": self.subject or None,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix or None,
        }


Check = Callable[["Context"], Awaitable[list[Finding]]]


def ok(check: str, detail: str, subject: str = "") -> Finding:
    return Finding(check, Status.OK, detail, "", subject)


def warn(check: str, detail: str, fix: str, subject: str = "") -> Finding:
    return Finding(check, Status.WARN, detail, fix, subject)


def fail(check: str, detail: str, fix: str, subject: str = "") -> Finding:
    return Finding(check, Status.FAIL, detail, fix, subject)


def skip(check: str, detail: str, subject: str = "") -> Finding:
    return Finding(check, Status.SKIP, detail, "", subject)
