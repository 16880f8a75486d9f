"""From a config ``type:`` to a class, importing the backend's module only when it is configured.

Each concern keeps a table ``{"slack": "rollbackd.notify.slack:SlackNotifier", ...}``. An unknown type
is a ConfigError naming the key path and the known types: never a silent fallback.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from rollbackd.errors import ConfigError


def load_class(spec: str) -> type[Any]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Any] = getattr(module, attr)
    return cls


def resolve(table: Mapping[str, str], type_name: str, path: str) -> type[Any]:
    if type_name not in table:
        known = ", ".join(sorted(table))
        raise ConfigError(f"{path}.type", f"unknown type {type_name!r}; known: {known}")
    try:
        return load_class(table[type_name])
    except ImportError as exc:  # a backend whose library is not installed
        raise ConfigError(f"{path}.type", f"type {type_name!r} needs a missing package: {exc}") from exc


def validate_options(cls: type[Any], options: Mapping[str, Any], path: str) -> BaseModel:
    """Validate ``options`` against ``cls.Options``; errors carry the full key path."""
    model: type[BaseModel] = cls.Options
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = [f"{path}{format_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(path, problems[0], problems=problems) from exc


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('plan', 2, 'type') -> '.plan[2].type'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
