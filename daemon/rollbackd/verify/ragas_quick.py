"""`type: ragas_quick`: a golden set (YAML list or JSONL of {id?, question, ground_truth, sources?}),
the first ``limit`` (20) questions sent to the RAG query endpoint (``request`` template: ``{question}``
is replaced; ``answer_path`` / ``contexts_path`` / ``context_ids_path`` read the response), scored by
the configured scorer (lexical by default) and compared, as means over the questions, with thresholds
(playbook defaults: faithfulness 0.85, answer relevancy 0.78, context recall 0.70).

PASS: enough questions answered (``min_answered``, default 5, and ``min_answered_fraction`` of the golden
set, default 80 %) and every mean reaches its threshold. FAIL: a mean below its threshold (named, with
the worst questions), or more questions answered with an error status than ``max_error_answers``.
ERROR: the service never answered (connection refused), or the scorer gave a score that is not a finite
number in [0, 1]. INCONCLUSIVE: too few questions (in the golden set, or answered), or the judge failed:
no PASS without evidence. Per-question scores go into ``details.questions`` so `rollbackd show` explains
a failure.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rollbackd.config import Duration
from rollbackd.reasons import Verdict
from rollbackd.verify import BaseVerifier, CheckOptions, CheckResult, VerifyContext
from rollbackd.verify.common import Unreachable, call, lookup, parse_path, render_template, session, short
from rollbackd.verify.scorers import METRICS, JudgeError, Sample, Scorer


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    faithfulness: Annotated[float, Field(ge=0, le=1)] = 0.85
    answer_relevancy: Annotated[float, Field(ge=0, le=1)] = 0.78
    context_recall: Annotated[float, Field(ge=0, le=1)] = 0.70


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: Annotated[str, Field(pattern=r"^https?://")]
    method: Literal["POST", "GET", "PUT"] = "POST"
    headers: dict[str, str] = {}
    body: Any = {"question": "{question}"}
    timeout: Duration = 30.0


class RagasQuickOptions(CheckOptions):
    golden: str
    limit: Annotated[int, Field(ge=1, le=1000)] = 20
    request: QueryRequest
    answer_path: str = "answer"
    contexts_path: str = "contexts[*].text"
    context_ids_path: str | None = "contexts[*].id"
    scorer: dict[str, Any] = {"type": "lexical"}
    thresholds: Thresholds = Thresholds()
    concurrency: Annotated[int, Field(ge=1, le=32)] = 4
    max_error_answers: Annotated[int, Field(ge=0)] = 0  # questions answered with an error status tolerated
    # No PASS without evidence: at least this many questions answered, and this share of the golden set.
    min_answered: Annotated[int, Field(ge=1)] = 5
    min_answered_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    deadline: Duration = 300.0

    @model_validator(mode="after")
    def _enough(self) -> RagasQuickOptions:
        if self.limit < self.min_answered:
            raise ValueError(
                f"limit {self.limit} is below min_answered {self.min_answered}: this check could never pass"
            )
        return self

    def required(self, questions: int) -> int:
        """Answered questions needed for a verdict other than INCONCLUSIVE."""
        return max(self.min_answered, math.ceil(self.min_answered_fraction * questions - 1e-9))

    @field_validator("answer_path", "contexts_path", "context_ids_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_path(v)
        return v


class GoldenError(Exception):
    pass


def load_golden(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The golden set as a list of {id, question, ground_truth, sources}; GoldenError names the item."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise GoldenError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.endswith(".jsonl"):
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            items = yaml.safe_load(text) or []
    except (ValueError, yaml.YAMLError) as exc:
        raise GoldenError(f"{path}: cannot parse: {exc}") from exc
    if isinstance(items, dict):
        items = items.get("questions") or []
    out = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("question"), str)
            or not isinstance(item.get("ground_truth"), str)
        ):
            raise GoldenError(f"{path}: item {i + 1}: needs `question` and `ground_truth` strings")
        sources = item.get("sources") or []
        out.append(
            {
                "id": str(item.get("id") or f"q{i + 1:02d}"),
                "question": item["question"],
                "ground_truth": item["ground_truth"],
                "sources": [str(s) for s in sources],
            }
        )
    return out[:limit] if limit else out


def build_scorer(spec: dict[str, Any]) -> Scorer:
    """Build the configured scorer (ConfigError for a bad spec; the plugin validated it at start)."""
    from rollbackd.registry import resolve, validate_options
    from rollbackd.verify.scorers import SCORERS

    kind = str(spec.get("type", "lexical"))
    cls = resolve(SCORERS, kind, "scorer")
    scorer: Scorer = cls(validate_options(cls, {"type": kind, **spec}, "scorer"))
    return scorer


class RagasQuickVerifier(BaseVerifier):
    type: ClassVar[str] = "ragas_quick"
    Options = RagasQuickOptions
    options: RagasQuickOptions

    def describe(self) -> str:
        return (
            f"ragas_quick: {self.options.limit} golden questions from {self.options.golden}, "
            f"scorer {self.options.scorer.get('type', 'lexical')}"
        )

    async def _ask(self, http: aiohttp.ClientSession, item: dict[str, Any]) -> Sample | str:
        req = self.options.request
        body = render_template(req.body, {"question": item["question"]})
        json_body = body if req.method != "GET" else None
        reply = await call(http, req.method, req.url, timeout=req.timeout, headers=req.headers, json_body=json_body)
        if reply.status >= 400:
            return f"HTTP {reply.status}: {short(reply.text, 80)}"
        data = reply.json()
        answer = lookup(data, self.options.answer_path)
        contexts = lookup(data, self.options.contexts_path)
        if not isinstance(answer, str):
            return f"no string at {self.options.answer_path}"
        contexts = [c for c in (contexts if isinstance(contexts, list) else []) if isinstance(c, str)]
        ids: Any = lookup(data, self.options.context_ids_path) if self.options.context_ids_path else []
        return Sample(
            id=item["id"],
            question=item["question"],
            ground_truth=item["ground_truth"],
            answer=answer,
            contexts=contexts,
            context_ids=[str(i) for i in ids] if isinstance(ids, list) else [],
            sources=item["sources"],
            response=data,
        )

    async def _ask_all(self, golden: list[dict[str, Any]]) -> list[Sample | str]:
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(http: aiohttp.ClientSession, item: dict[str, Any]) -> Sample | str:
            async with gate:
                return await self._ask(http, item)

        async with session() as http:
            return list(await asyncio.gather(*(one(http, item) for item in golden)))

    async def verify(self, ctx: VerifyContext) -> CheckResult:
        try:
            golden = load_golden(self.options.golden, self.options.limit)
        except GoldenError as exc:
            return self.result(Verdict.ERROR, str(exc))
        if len(golden) < self.options.min_answered:
            return self.result(
                Verdict.INCONCLUSIVE,
                f"{len(golden)} golden question(s) in {self.options.golden}; "
                f"at least {self.options.min_answered} must be answered (min_answered)",
                figures={"questions": len(golden)},
            )
        try:
            answers = await self._ask_all(golden)
        except Unreachable as exc:
            return self.result(Verdict.ERROR, str(exc))
        samples = [a for a in answers if isinstance(a, Sample)]
        errors = {g["id"]: a for g, a in zip(golden, answers, strict=True) if isinstance(a, str)}
        try:
            scorer = build_scorer(self.options.scorer)
        except Exception as exc:  # the scorer cannot even start (the extra is missing): the judge failed
            return self.result(Verdict.INCONCLUSIVE, f"scorer {self.options.scorer.get('type')}: {exc}")
        try:
            scores = await scorer.score(samples) if samples else []
        except JudgeError as exc:
            return self.result(
                Verdict.INCONCLUSIVE,
                f"the judge failed: {exc}",
                details={"errors": errors},
                figures={"questions": len(golden)},
            )
        finally:
            await scorer.close()
        bad = invalid_scores(samples, scores)
        if bad:
            return self.result(
                Verdict.ERROR,
                f"scorer {self.options.scorer.get('type', 'lexical')} gave an invalid "
                f"score: {bad} (scores must be finite numbers in [0, 1])",
                details={"errors": errors},
                figures={"questions": len(golden)},
            )
        return self._judge(golden, samples, scores, errors)

    def _judge(
        self,
        golden: list[dict[str, Any]],
        samples: list[Sample],
        scores: list[dict[str, float]],
        errors: dict[str, str],
    ) -> CheckResult:
        th = self.options.thresholds.model_dump()
        per_q: list[dict[str, Any]] = [
            {"id": s.id, "question": s.question, **sc, "answer": short(s.answer, 120)}
            for s, sc in zip(samples, scores, strict=True)
        ]
        per_q += [{"id": qid, "error": err} for qid, err in errors.items()]
        means = {m: round(sum(sc[m] for sc in scores) / len(scores), 4) if scores else 0.0 for m in METRICS}
        figures: dict[str, float | int | str] = {
            **means,
            "questions": len(golden),
            "answered": len(samples),
            "errors": len(errors),
        }
        details: dict[str, Any] = {
            "thresholds": th,
            "means": means,
            "questions": per_q,
            "scorer": self.options.scorer.get("type", "lexical"),
        }
        problems: list[str] = []
        if len(errors) > self.options.max_error_answers:
            first = next(iter(errors.items()))
            problems.append(f"{len(errors)}/{len(golden)} questions failed ({first[0]}: {first[1]})")
        for metric in METRICS:
            if scores and means[metric] < th[metric]:
                worst = sorted(zip(samples, scores, strict=True), key=lambda p: p[1][metric])[:3]
                names = ", ".join(f"{s.id} {sc[metric]:.2f}" for s, sc in worst)
                problems.append(f"{metric} {means[metric]:.2f} < {th[metric]:.2f} (worst: {names})")
        scored = ", ".join(f"{m} {means[m]:.2f}" for m in METRICS)
        if problems:
            return self.result(
                Verdict.FAIL,
                "; ".join(problems) + f" [{len(samples)} scored: {scored}]",
                details=details,
                figures=figures,
            )
        needed = self.options.required(len(golden))
        if len(samples) < needed:
            return self.result(
                Verdict.INCONCLUSIVE,
                f"only {len(samples)}/{len(golden)} questions answered; {needed} needed for a verdict [{scored}]",
                details=details,
                figures=figures,
            )
        return self.result(
            Verdict.PASS,
            f"{len(samples)}/{len(golden)} questions: {scored} (thresholds "
            f"{th['faithfulness']:.2f}/{th['answer_relevancy']:.2f}/{th['context_recall']:.2f})",
            details=details,
            figures=figures,
        )


def invalid_scores(samples: list[Sample], scores: list[dict[str, float]]) -> str | None:
    """The first score that is missing, not a number, not finite or outside [0, 1]: a broken scorer
    (or a service scoring itself with NaN) must never turn into a mean that passes."""
    if len(scores) != len(samples):
        return f"{len(scores)} score sets for {len(samples)} answers"
    for sample, sc in zip(samples, scores, strict=True):
        for metric in METRICS:
            value = sc.get(metric)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                return f"{sample.id}: {metric} = {value!r}"
    return None
