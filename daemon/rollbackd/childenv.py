"""The environment of every child process rollbackd starts (``command`` steps, the ``command``
deploy and traffic backends, pg_dump/pg_restore): built, never inherited whole.

1. From the daemon's own environment, only the allow-list below: what programs need to find
   themselves and speak the locale. Tokens, DSNs, cloud credentials and proxies are not in it; and a
   variable whose value carries a secret the config loaded (``redact.register``) is dropped even then.
2. The variables the config declares for that child (``env:``), which win over 1.
3. For steps: ROLLBACKD_* fields of the incident, and each alert label as ``ROLLBACKD_LABEL_<NAME>``.

Labels are data from the network, so a label can never fail a step:

- only names matching ``[A-Za-z_][A-Za-z0-9_]*`` become variables (upper-cased); others (``a=b``,
  ``a-b``, ``1x``) are skipped and listed (the step's journal output names them);
- two names that upper-case alike (``Foo`` and ``foo``) collide: the one first in code-point order
  (``Foo``, since upper case sorts first) wins, the others are skipped and listed;
- a value with a NUL (which no environment can hold; intake refuses it already) is skipped and listed.
  Every other character, newlines included, is passed as sent: execve takes any byte but NUL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from rollbackd import redact

ALLOWED = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "XDG_RUNTIME_DIR"}
)
ALLOWED_PREFIXES = ("LC_",)
LABEL_PREFIX = "ROLLBACKD_LABEL_"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def inherited(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of the daemon's environment (1. above)."""
    source = os.environ if environ is None else environ
    return {
        k: v
        for k, v in source.items()
        if (k in ALLOWED or k.startswith(ALLOWED_PREFIXES)) and not redact.contains_secret(v)
    }


def build(
    declared: Mapping[str, str] | None = None,
    fields: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A child's whole environment: allow-list, then declared variables, then ROLLBACKD_* fields."""
    return {**inherited(environ), **(declared or {}), **(fields or {})}


def label_vars(labels: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``ROLLBACKD_LABEL_<NAME>`` for each label that can be one, and the names that could not."""
    out: dict[str, str] = {}
    skipped: list[str] = []
    for name in sorted(labels):
        value = labels[name]
        var = LABEL_PREFIX + name.upper()
        if not _NAME.fullmatch(name) or "\x00" in value or var in out:
            skipped.append(name)
            continue
        out[var] = value
    return out, skipped
