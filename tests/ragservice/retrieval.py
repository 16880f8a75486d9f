"""Lexical retrieval, answer building and lexical quality scores (pure functions, no I/O).

Tokens: lower-case runs of [a-z0-9], stop words removed, a trailing plural `s` stripped ("lasts" ~ "last").
Retrieval ranks documents by the share of the question's tokens they contain (top score in [0, 1]).

Good mode answers extractively with the sentences of the top contexts that best match the question, so the
answer is faithful to its contexts. Bad mode models a broken release: retrieval has drifted (the best match
is lost, the rest is ranked worst-first and padded with unrelated documents) and the answer is hallucinated
from words that appear in no context.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_STOPWORDS_TEXT = """
    a an and are as at be been being but by can could did do does done for from had has have he her his
    how i if in into is it its may me might must my no nor not of on or our she should so such than
    that the their them then there these they this those to too us was we were what when where which
    while who whom whose why will with would you your many much often long every each about
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

# Made-up words: by construction in no document of the test corpus.
_HALLUCINATION_TEXT = (
    "zorblat frimbly quastor velmoran drubix plontage skeevar mornish gratzel wubbleton yarnix crelp "
    "vostrand blimmet kadoozle prandish snorkvel tuppage grindle oxwarp"
)
HALLUCINATION_WORDS = tuple(_HALLUCINATION_TEXT.split())


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    body: str
    source: str = ""

    @property
    def text(self) -> str:
        return f"{self.title}. {self.body}"


@dataclass(frozen=True)
class Hit:
    doc: Doc
    score: float


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def raw_tokens(text: str) -> list[str]:
    """Content words as written (no stemming): what a Postgres 'simple' text search matches."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def tokens(text: str) -> set[str]:
    return {_stem(w) for w in raw_tokens(text)}


def overlap(part: Iterable[str], whole: set[str]) -> float:
    """Share of `part` found in `whole` (0.0 for an empty part)."""
    items = set(part)
    return len(items & whole) / len(items) if items else 0.0


def rank(question: str, docs: Iterable[Doc]) -> list[Hit]:
    """Documents sharing at least one token with the question, best first (ties by id)."""
    q = tokens(question)
    hits = [Hit(d, overlap(q, tokens(d.text))) for d in docs]
    hits = [h for h in hits if h.score > 0]
    hits.sort(key=lambda h: (-h.score, h.doc.id))
    return hits


def retrieve(question: str, docs: Sequence[Doc], *, k: int = 3, mode: str = "good") -> list[Hit]:
    """Top-k contexts. In bad mode: drifted retrieval (see module docstring)."""
    ranked = rank(question, docs)
    if mode == "good":
        return ranked[:k]
    drifted = list(reversed(ranked[1:]))[:k]
    seen = {h.doc.id for h in ranked[:1]} | {h.doc.id for h in drifted}
    q = tokens(question)
    for d in sorted(docs, key=lambda d: d.id):
        if len(drifted) >= k:
            break
        if d.id not in seen:
            drifted.append(Hit(d, overlap(q, tokens(d.text))))
            seen.add(d.id)
    return drifted


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def good_answer(question: str, hits: Sequence[Hit]) -> str:
    """Extractive: the best-matching sentence of the top context, plus the next context's if it adds words."""
    if not hits:
        return "I could not find this in the documents."
    q = tokens(question)
    picked: list[str] = []
    covered: set[str] = set()
    for hit in hits[:2]:
        best = max(sentences(hit.doc.body) or [hit.doc.body], key=lambda s: (overlap(q, tokens(s)), -len(s)))
        gain = (tokens(best) & q) - covered
        if not picked or gain:
            picked.append(best)
            covered |= tokens(best) & q
    return " ".join(picked)


def bad_answer(question: str) -> str:
    """Hallucinated, deterministic per question: words that appear in no context."""
    digest = hashlib.sha256(question.encode()).digest()
    words = [HALLUCINATION_WORDS[b % len(HALLUCINATION_WORDS)] for b in digest[:9]]
    return f"{words[0].capitalize()} {' '.join(words[1:5])}, then {' '.join(words[5:])}."


def lexical_scores(question: str, answer: str, contexts: Sequence[str]) -> dict[str, float]:
    """Per-query approximations of RAGAS (not RAGAS): answer tokens grounded in the contexts (faithfulness),
    question tokens addressed by the answer (answer_relevancy), question tokens covered by the contexts
    (context_recall: the service knows no ground truth)."""
    ctx = set().union(*(tokens(c) for c in contexts)) if contexts else set()
    q = tokens(question)
    a = tokens(answer)
    return {
        "faithfulness": overlap(a, ctx),
        "answer_relevancy": overlap(q, a),
        "context_recall": overlap(q, ctx),
    }


def recall_against(ground_truth: str, contexts: Sequence[str]) -> float:
    """Share of the ground truth's tokens found in the contexts (context recall with a ground truth)."""
    ctx = set().union(*(tokens(c) for c in contexts)) if contexts else set()
    return overlap(tokens(ground_truth), ctx)


CANNED = "Thank you for your question. Our documentation covers this topic in detail."
_NUMBERS = _WORD.findall(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
)
_FOREIGN = {
    "the": "el",
    "is": "es",
    "and": "y",
    "was": "fue",
    "in": "en",
    "by": "por",
    "wide": "ancho",
    "mirror": "espejo",
    "telescope": "telescopio",
    "months": "meses",
    "lasts": "dura",
    "every": "cada",
}


def _off_by_one(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.isdigit():
        return str(int(word) + 1)
    lower = word.lower()
    return _NUMBERS[(_NUMBERS.index(lower) + 1) % len(_NUMBERS)] if lower in _NUMBERS else word


def gamed_answer(mode: str, question: str, hits: Sequence[Hit], pile: Sequence[Doc]) -> str:
    """Answers that game a lexical scorer (see faults.ANSWER_MODES); ``pile`` is what dump returns."""
    good = good_answer(question, hits)
    if mode == "canned":
        return CANNED
    if mode == "echo":
        return question
    if mode == "dump":
        return " ".join(d.text for d in pile)
    if mode == "negate":
        return " ".join(
            re.sub(r"\b(is|are|was|were|lasts|ship|ships|need|needs|covers)\b", r"\1 not", s, count=1)
            for s in sentences(good)
        )
    if mode == "wrong_number":
        return re.sub(r"\b([0-9]+|[A-Za-z]+)\b", _off_by_one, good)
    if mode == "foreign":
        return re.sub(r"[A-Za-z]+", lambda m: _FOREIGN.get(m.group(0).lower(), m.group(0)), good)
    raise ValueError(f"unknown answer mode {mode!r}")
