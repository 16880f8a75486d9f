"""The rollout capability's hooks into the core (rollbackd.plugins): its config section."""

from __future__ import annotations

from rollbackd.config import Settings
from rollbackd.errors import ConfigError
from rollbackd.rollout import config


def validate(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, svc in settings.services.items():
        try:
            config.parse(svc.rollout, f"services.{name}.rollout")
        except ConfigError as exc:
            problems += exc.problems
    return problems
