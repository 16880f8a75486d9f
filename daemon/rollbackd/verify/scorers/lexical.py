"""`scorer: {type: lexical}` (default): deterministic, offline scores that approximate RAGAS (they are
not RAGAS: no model judges meaning, only words are compared).

Tokens: lower-case runs of ``[a-z0-9]``, stop words (STOPWORDS) dropped, a trailing plural ``s``
stripped from words longer than 3 letters that do not end in ``ss``. T(x) is the set of tokens of x,
S(x) their sequence in order.

- faithfulness: the answer is split into claims at sentence ends (``.``, ``!``, ``?``, ``;`` followed
  by white space); the support of a claim is |T(claim) ∩ T(all contexts)| / |T(claim)|; faithfulness is
  the mean support of the claims that have tokens (0 for an answer without any).
- answer_relevancy: coverage of the question, |T(q) ∩ T(answer)| / |T(q)|; with a ground truth, the
  mean of that and the ground truth's recall in the answer, |T(gt) ∩ T(answer)| / |T(gt)|.
- context_recall: when the golden item lists source ids and the response gives context ids,
  |sources ∩ context ids| / |sources|; otherwise ROUGE-L recall of the ground truth against the
  contexts: max over contexts of LCS(S(gt), S(context)) / |S(gt)|.

Every score is in [0, 1] and rounded to 4 decimals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from rollbackd.verify.scorers import Sample

_STOPWORDS_TEXT = """
    a an and are as at be been being but by can could did do does done for from had has have he her his
    how i if in into is it its may me might must my no nor not of on or our she should so such than
    that the their them then there these they this those to too us was we were what when where which
    while who whom whose why will with would you your many much often long every each about
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")
_CLAIM_END = re.compile(r"(?<=[.!?;])\s+")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def token_seq(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def tokens(text: str) -> set[str]:
    return set(token_seq(text))


def coverage(part: set[str], whole: set[str]) -> float:
    return len(part & whole) / len(part) if part else 0.0


def lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def faithfulness(answer: str, contexts: Sequence[str]) -> float:
    ctx = set().union(*(tokens(c) for c in contexts)) if contexts else set()
    claims = [tokens(c) for c in _CLAIM_END.split(answer.strip())]
    supports = [coverage(c, ctx) for c in claims if c]
    return sum(supports) / len(supports) if supports else 0.0


def answer_relevancy(question: str, answer: str, ground_truth: str = "") -> float:
    ans = tokens(answer)
    q_cov = coverage(tokens(question), ans)
    gt = tokens(ground_truth)
    return (q_cov + coverage(gt, ans)) / 2 if gt else q_cov


def rouge_l_recall(reference: str, contexts: Sequence[str]) -> float:
    ref = token_seq(reference)
    if not ref:
        return 0.0
    return max((lcs(ref, token_seq(c)) / len(ref) for c in contexts), default=0.0)


def context_recall(sample: Sample) -> float:
    if sample.sources and sample.context_ids:
        return len(set(sample.sources) & set(sample.context_ids)) / len(set(sample.sources))
    return rouge_l_recall(sample.ground_truth, sample.contexts)


def score_sample(sample: Sample) -> dict[str, float]:
    return {
        "faithfulness": round(faithfulness(sample.answer, sample.contexts), 4),
        "answer_relevancy": round(answer_relevancy(sample.question, sample.answer, sample.ground_truth), 4),
        "context_recall": round(context_recall(sample), 4),
    }


class LexicalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = "lexical"


class LexicalScorer:
    Options = LexicalOptions
    name = "lexical"

    def __init__(self, options: LexicalOptions | None = None) -> None:
        self.options = options or LexicalOptions()

    async def score(self, samples: list[Sample]) -> list[dict[str, float]]:
        return [score_sample(s) for s in samples]

    async def close(self) -> None:
        return None
