"""`scorer: {type: lexical}` (default): deterministic, offline scores that approximate RAGAS (they are
not RAGAS: no model judges meaning, only words are compared).

Tokens: lower-case runs of ``[a-z0-9]`` (``n't`` read as ``not``, ``cannot`` as ``can not``), stop words
(STOPWORDS) dropped, a trailing plural ``s`` stripped from words longer than 3 letters that do not end in
``ss``. Negations (NEGATIONS) and numbers (digits and NUMBER_WORDS) are tokens like any other word: a
negated or wrong fact must not read like the right one. T(x) is the set of tokens of x, S(x) their
sequence in order. A token right after a negation is *negated*.

- faithfulness: the answer is split into claims at sentence ends (``.``, ``!``, ``?``, ``;`` followed
  by white space); the support of a claim is |T(claim) ∩ T(all contexts)| / |T(claim)|, and 0 when the
  claim contradicts the contexts: a number of the claim is in no context, a word the claim negates is
  never negated in the contexts, or a word the claim states is only ever negated there. Faithfulness is
  the mean support of the claims that have tokens (0 for an answer without any).
- answer_relevancy: coverage of the question, |T(q) ∩ T(answer)| / |T(q)|; with a ground truth, the
  mean of that and the recall of what the ground truth adds to the question, |N ∩ T(answer)| / |N| with
  N = T(gt) - T(q) (an answer that echoes the question adds nothing). Multiplied by the length factor
  min(1, allowed / |S(answer)|), allowed = max(3 |S(gt)|, |S(gt)| + 20) (|S(q)| without a ground truth):
  an answer far past the ground truth's scale (a corpus dump) is not a relevant answer.
- context_recall: when the golden item lists source ids and the response gives context ids,
  |sources ∩ context ids| / |sources|; otherwise ROUGE-L recall of the ground truth against the
  contexts: max over contexts of LCS(S(gt), S(context)) / |S(gt)|.

Every score is in [0, 1] and rounded to 4 decimals. What this cannot catch (README "Lexical scoring"):
paraphrase and meaning (a correct answer in other words, or in another language, scores low: a false
FAIL), a wrong fact made of words that are in the contexts, a negation further than one word from what
it negates. Use the ``ragas`` judge scorer where that matters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from rollbackd.verify.scorers import Sample

_STOPWORDS_TEXT = """
    a an and are as at be been being but by can could did do does done for from had has have he her his
    how i if in into is it its may me might must my of on or our she should so such than
    that the their them then there these they this those to too us was we were what when where which
    while who whom whose why will with would you your many much often long every each about
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
NEGATIONS = frozenset({"no", "not", "nor", "never", "none", "neither", "nothing", "without"})
_NUMBERS_TEXT = """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand
    million billion half
"""
NUMBER_WORDS = frozenset(_NUMBERS_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")
_CLAIM_END = re.compile(r"(?<=[.!?;])\s+")
_NOT = re.compile(r"n't\b|\bcannot\b")


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def token_seq(text: str) -> list[str]:
    text = _NOT.sub(lambda m: " not" if m.group(0) == "n't" else "can not", text.lower())
    return [_stem(w) for w in _WORD.findall(text) if w not in STOPWORDS]


def tokens(text: str) -> set[str]:
    return set(token_seq(text))


def is_number(token: str) -> bool:
    return token.isdigit() or token in NUMBER_WORDS


def polarity(seq: Sequence[str]) -> tuple[set[str], set[str]]:
    """(negated, stated): the words right after a negation, and the other content words."""
    negated: set[str] = set()
    stated: set[str] = set()
    for i, tok in enumerate(seq):
        if tok in NEGATIONS:
            continue
        (negated if i and seq[i - 1] in NEGATIONS else stated).add(tok)
    return negated, stated


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


def contradicts(claim: Sequence[str], ctx: set[str], ctx_negated: set[str], ctx_stated: set[str]) -> bool:
    """A wrong number, or a negation the contexts do not make (or a statement they only ever negate)."""
    if any(is_number(t) and t not in ctx for t in claim):
        return True
    negated, stated = polarity(claim)
    return bool(negated - ctx_negated) or bool(stated & (ctx_negated - ctx_stated))


def faithfulness(answer: str, contexts: Sequence[str]) -> float:
    seqs = [token_seq(c) for c in contexts]
    ctx = set().union(*seqs) if seqs else set()
    ctx_negated: set[str] = set()
    ctx_stated: set[str] = set()
    for seq in seqs:
        negated, stated = polarity(seq)
        ctx_negated |= negated
        ctx_stated |= stated
    claims = [token_seq(c) for c in _CLAIM_END.split(answer.strip())]
    supports = [0.0 if contradicts(c, ctx, ctx_negated, ctx_stated) else coverage(set(c), ctx) for c in claims if c]
    return sum(supports) / len(supports) if supports else 0.0


def length_factor(answer: str, ground_truth: str, question: str) -> float:
    """1 up to the ground truth's scale, then falling as ``allowed / length``."""
    scale = len(token_seq(ground_truth)) or len(token_seq(question))
    allowed = max(3 * scale, scale + 20)
    length = len(token_seq(answer))
    return min(1.0, allowed / length) if length else 1.0


def answer_relevancy(question: str, answer: str, ground_truth: str = "") -> float:
    ans = tokens(answer)
    q = tokens(question)
    q_cov = coverage(q, ans)
    new = tokens(ground_truth) - q
    score = (q_cov + coverage(new, ans)) / 2 if new else q_cov
    return score * length_factor(answer, ground_truth, question)


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
