"""`scorer: {type: endpoint}`: the service evaluates itself and returns its scores in the query response.

``paths`` maps each metric to a dotted path in the response (default ``scores.<metric>``). A missing or
non-numeric score is a JudgeError (INCONCLUSIVE): the service did not say.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from rollbackd.verify.common import MISSING, lookup
from rollbackd.verify.scorers import METRICS, JudgeError, Sample


class EndpointOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = "endpoint"
    paths: dict[str, str] = {m: f"scores.{m}" for m in METRICS}


class EndpointScorer:
    Options = EndpointOptions
    name = "endpoint"

    def __init__(self, options: EndpointOptions) -> None:
        self.options = options

    async def score(self, samples: list[Sample]) -> list[dict[str, float]]:
        out = []
        for sample in samples:
            scores: dict[str, float] = {}
            for metric, path in self.options.paths.items():
                value: Any = lookup(sample.response, path)
                if value is MISSING or isinstance(value, bool) or not isinstance(value, int | float):
                    raise JudgeError(f"{sample.id}: the response has no numeric {path}")
                scores[metric] = float(value)
            out.append(scores)
        return out

    async def close(self) -> None:
        return None
