"""`type: governance`: the service's sources file (YAML ``sources: [{id, owner, review_date, critical}]``).

Every critical source has an owner and a review_date that is not in the past (today counts as not
past); with ``corpus`` set, every source the query finds in the corpus (``SELECT DISTINCT source FROM
docs``) is declared. FAIL names each violating source; an unreadable file, a ``critical`` that is not
true/false, or a failed query is ERROR; a file that declares no source, or no critical one, is
INCONCLUSIVE: rules over zero sources prove nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr

from rollbackd.reasons import Verdict
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext


class CorpusQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dsn: SecretStr  # credential-bearing: from ${ENV} only, never printed
    query: str = "SELECT DISTINCT source FROM docs"
    timeout: float = 10.0


class GovernanceOptions(CheckOptions):
    sources_file: str
    corpus: CorpusQuery | None = None


class GovernanceError(Exception):
    pass


def load_sources(path: str) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise GovernanceError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise GovernanceError(f"{path}: not valid YAML: {exc}") from exc
    sources = doc.get("sources") if isinstance(doc, dict) else None
    if sources is None:
        return []
    if not isinstance(sources, list) or not all(isinstance(s, dict) and s.get("id") for s in sources):
        raise GovernanceError(f"{path}: `sources` must be a list of mappings, each with an `id`")
    loose = [str(s["id"]) for s in sources if not isinstance(s.get("critical", False), bool)]
    if loose:  # `critical: "no"` is truthy in Python: refuse to guess
        raise GovernanceError(f"{path}: `critical` must be true or false (source {loose[0]})")
    return sources


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def violations(sources: list[dict[str, Any]], today: dt.date) -> list[str]:
    """One sentence per problem of a critical source, in file order."""
    out: list[str] = []
    for src in sources:
        if not src.get("critical"):
            continue
        name = str(src["id"])
        if not str(src.get("owner") or "").strip():
            out.append(f"{name}: critical source without an owner")
        raw = src.get("review_date")
        review = _date(raw)
        if raw in (None, ""):
            out.append(f"{name}: critical source without a review_date")
        elif review is None:
            out.append(f"{name}: review_date {raw!r} is not a date (YYYY-MM-DD)")
        elif review < today:
            out.append(f"{name}: review overdue since {review.isoformat()} ({(today - review).days} days)")
    return out


class GovernanceVerifier(BaseVerifier):
    type: ClassVar[str] = "governance"
    Options = GovernanceOptions
    options: GovernanceOptions

    def today(self) -> dt.date:
        """Local date (a review_date is a calendar day); tests replace it."""
        return dt.datetime.fromtimestamp(time.time()).date()

    def describe(self) -> str:
        extra = " and the corpus's sources declared" if self.options.corpus else ""
        return f"governance: {self.options.sources_file} (critical sources owned and reviewed{extra})"

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        try:
            sources = load_sources(self.options.sources_file)
        except GovernanceError as exc:
            return self.result(Verdict.ERROR, str(exc))
        if not sources:
            return self.result(Verdict.INCONCLUSIVE, f"{self.options.sources_file} declares no source")
        problems = violations(sources, self.today())
        undeclared: list[str] = []
        if self.options.corpus is not None:
            try:
                found = await _corpus_sources(self.options.corpus)
            except GovernanceError as exc:
                return self.result(Verdict.ERROR, str(exc))
            declared = {str(s["id"]) for s in sources}
            undeclared = sorted(found - declared)
            problems += [f"{name}: found in the corpus but not declared" for name in undeclared]
        critical = sum(1 for s in sources if s.get("critical"))
        figures: dict[str, float | int | str] = {
            "sources": len(sources),
            "critical": critical,
            "violations": len(problems),
            "undeclared": len(undeclared),
        }
        if problems:
            return self.result(Verdict.FAIL, "; ".join(problems), details={"violations": problems}, figures=figures)
        if not critical:
            return self.result(
                Verdict.INCONCLUSIVE,
                f"no source of {len(sources)} in {self.options.sources_file} "
                "is marked critical: nothing to hold to owner and review rules",
                figures=figures,
            )
        corpus = ", every corpus source declared" if self.options.corpus else ""
        return self.result(
            Verdict.PASS, f"{critical} critical of {len(sources)} sources owned and reviewed{corpus}", figures=figures
        )


async def _corpus_sources(corpus: CorpusQuery) -> set[str]:
    import asyncpg

    try:
        conn = await asyncpg.connect(corpus.dsn.get_secret_value(), timeout=corpus.timeout)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise GovernanceError(f"corpus: cannot connect: {type(exc).__name__}: {exc}") from exc
    try:
        rows = await conn.fetch(corpus.query, timeout=corpus.timeout)
    except (asyncpg.PostgresError, TimeoutError) as exc:
        raise GovernanceError(f"corpus query failed: {exc}") from exc
    finally:
        await conn.close()
    return {str(r[0]) for r in rows if r[0] is not None}
