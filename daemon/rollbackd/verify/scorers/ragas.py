"""`scorer: {type: ragas}`: the `ragas` package (optional extra ``rollbackd[ragas]``) with an LLM judge and
embeddings through an OpenAI-compatible ``base_url``. Telemetry is off (RAGAS_DO_NOT_TRACK=true).

Uses ragas' metric collections (Faithfulness, AnswerRelevancy, ContextRecall) with ``llm_factory`` and
``embedding_factory`` on an ``openai.AsyncOpenAI`` client. Any judge failure (unreachable, timeout,
unparsable output, NaN) is a JudgeError, so the verdict is INCONCLUSIVE, never FAIL. Without the extra,
building the scorer raises ScorerUnavailable naming it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import warnings
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from rollbackd.config import Duration
from rollbackd.verify.scorers import JudgeError, Sample

EXTRA_HINT = "the ragas scorer needs the optional extra: pip install 'rollbackd[ragas]'"


class ScorerUnavailable(Exception):
    pass


class RagasOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = "ragas"
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    model: str = "gpt-4o-mini"
    embedding_model: str = "text-embedding-3-small"
    api_key: SecretStr | None = None
    timeout: Duration = 60.0
    concurrency: Annotated[int, Field(ge=1, le=32)] = 4
    strictness: Annotated[int, Field(ge=1, le=5)] = 1


def available() -> bool:
    return importlib.util.find_spec("ragas") is not None and importlib.util.find_spec("openai") is not None


class RagasScorer:
    Options = RagasOptions
    name = "ragas"

    def __init__(self, options: RagasOptions) -> None:
        self.options = options
        os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
        try:
            from openai import AsyncOpenAI  # type: ignore[import-not-found,unused-ignore]
            from ragas.embeddings.base import embedding_factory  # type: ignore[import-not-found,unused-ignore]
            from ragas.llms import llm_factory  # type: ignore[import-not-found,unused-ignore]
            from ragas.metrics.collections import (  # type: ignore[import-not-found,unused-ignore]
                AnswerRelevancy,
                ContextRecall,
                Faithfulness,
            )
        except ImportError as exc:
            raise ScorerUnavailable(f"{EXTRA_HINT} ({exc})") from exc
        key = options.api_key.get_secret_value() if options.api_key else "unused"
        self._client = AsyncOpenAI(base_url=options.base_url, api_key=key, timeout=options.timeout, max_retries=0)
        llm = llm_factory(options.model, client=self._client)
        embeddings = embedding_factory("openai", model=options.embedding_model, client=self._client)
        self._faithfulness = Faithfulness(llm=llm)
        self._relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=options.strictness)
        self._recall = ContextRecall(llm=llm)

    async def _one(self, sample: Sample) -> dict[str, float]:
        if not sample.answer.strip() or not sample.contexts:  # ragas refuses these; they are simply wrong
            return {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.0}
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "faithfulness": lambda: self._faithfulness.ascore(
                user_input=sample.question, response=sample.answer, retrieved_contexts=sample.contexts
            ),
            "answer_relevancy": lambda: self._relevancy.ascore(user_input=sample.question, response=sample.answer),
            "context_recall": lambda: self._recall.ascore(
                user_input=sample.question, retrieved_contexts=sample.contexts, reference=sample.ground_truth
            ),
        }
        out: dict[str, float] = {}
        for metric, call in calls.items():
            try:
                with warnings.catch_warnings():  # instructor warns about its own deprecations on every call
                    warnings.simplefilter("ignore", DeprecationWarning)
                    result = await asyncio.wait_for(call(), self.options.timeout)
            except TimeoutError as exc:
                raise JudgeError(
                    f"{sample.id}: {metric}: the judge did not answer within {self.options.timeout:g}s"
                ) from exc
            except Exception as exc:  # ragas/openai/instructor raise many types; all mean "the judge failed"
                raise JudgeError(f"{sample.id}: {metric}: {type(exc).__name__}: {str(exc)[:200]}") from exc
            value = float(result.value)
            if math.isnan(value):
                raise JudgeError(f"{sample.id}: {metric}: the judge returned no score (NaN)")
            out[metric] = round(value, 4)
        return out

    async def score(self, samples: list[Sample]) -> list[dict[str, float]]:
        gate = asyncio.Semaphore(self.options.concurrency)

        async def bounded(sample: Sample) -> dict[str, float]:
            async with gate:
                return await self._one(sample)

        return list(await asyncio.gather(*(bounded(s) for s in samples)))

    async def close(self) -> None:
        await self._client.close()
