"""Scorers of the `ragas_quick` verifier: each turns answered golden questions into per-question scores
of faithfulness, answer relevancy and context recall (each in [0, 1]).

- ``lexical`` (default): deterministic and offline; an approximation of RAGAS, not RAGAS (lexical.py).
- ``ragas``: the `ragas` package with an LLM judge through an OpenAI-compatible ``base_url``
  (optional extra ``rollbackd[ragas]``; imported only when configured).
- ``endpoint``: the service scores itself; the scores are read from its query response.

A scorer raises JudgeError when the judge itself fails (unreachable, timeout, unparsable answer): the
verifier's verdict is then INCONCLUSIVE, never FAIL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

METRICS: Final = ("faithfulness", "answer_relevancy", "context_recall")
SCORERS: Final[Mapping[str, str]] = {
    "lexical": "rollbackd.verify.scorers.lexical:LexicalScorer",
    "ragas": "rollbackd.verify.scorers.ragas:RagasScorer",
    "endpoint": "rollbackd.verify.scorers.endpoint:EndpointScorer",
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One golden question and what the service answered."""

    id: str
    question: str
    ground_truth: str
    answer: str
    contexts: list[str]
    context_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # expected source ids from the golden set
    response: Any = None  # the parsed response body (the endpoint scorer reads its scores there)


class JudgeError(Exception):
    """The judge could not score (LLM unreachable, timed out, answered nonsense, missing scores)."""


class Scorer(Protocol):
    name: str

    async def score(self, samples: list[Sample]) -> list[dict[str, float]]:
        """One {metric: score} per sample, in order; raises JudgeError."""
        ...

    async def close(self) -> None: ...
