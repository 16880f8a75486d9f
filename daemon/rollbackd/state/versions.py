"""What a decision reads (pauses, holds, budget, cooldown, active incident, release target) changes only
through a few store methods; each of them bumps a version here, so the intake can keep that view in
memory and know exactly when it is stale. The bump lives at the store boundary (``invalidates``) so no
caller can forget it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

ALL = "*"  # every service (the global pause's name, too)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class DecisionVersions:
    def __init__(self) -> None:
        self._all = 0
        self._service: dict[str, int] = {}

    def bump(self, service: str | None) -> None:
        if service is None:
            return
        if service == ALL:
            self._all += 1
        else:
            self._service[service] = self._service.get(service, 0) + 1

    def of(self, service: str) -> int:
        """Changes whenever anything a decision about ``service`` reads may have changed."""
        return self._all + self._service.get(service, 0)


class Versioned:
    """Mixin of the stores: ``decision_version`` and the versions the decorated writers bump."""

    @property
    def decisions(self) -> DecisionVersions:
        found = self.__dict__.get("_decision_versions")
        if found is None:
            found = self.__dict__["_decision_versions"] = DecisionVersions()
        return found

    def decision_version(self, service: str) -> int:
        return self.decisions.of(service)


def invalidates(which: Callable[..., str | None] = lambda *args, **kwargs: ALL) -> Callable[[F], F]:
    """Bump the decision version of the service ``which(*args, **kwargs)`` names (ALL: every one; None:
    nothing decision-relevant) after the write, failed or not: a write whose answer was lost may have
    committed, so the cached view is dropped either way."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(self, *args, **kwargs)
            finally:
                self.decisions.bump(which(*args, **kwargs))

        return cast(F, method)

    return wrap
