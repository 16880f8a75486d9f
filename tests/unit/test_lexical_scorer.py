"""The lexical scorer's definition, pinned: fixed golden sets give fixed scores (regression numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rollbackd.verify.scorers import Sample
from rollbackd.verify.scorers.lexical import (
    LexicalScorer,
    answer_relevancy,
    faithfulness,
    lcs,
    rouge_l_recall,
    score_sample,
    token_seq,
)
from tests.ragservice.retrieval import bad_answer, good_answer, retrieve
from tests.support.corpus import corpus_docs

DATA = Path(__file__).resolve().parents[1] / "data"


def fixed_samples() -> list[Sample]:
    items = [json.loads(line) for line in (DATA / "golden_lexical.jsonl").read_text().splitlines() if line]
    return [Sample(d["id"], d["question"], d["ground_truth"], d["answer"], d["contexts"], d.get("context_ids", []),
                   d.get("sources", [])) for d in items]


def test_tokens_drop_stop_words_and_plural_s() -> None:
    assert token_seq("The Kestrel warranty lasts 18 months, glass and gas!") == [
        "kestrel", "warranty", "last", "18", "month", "glass", "gas"]


def test_lcs_and_rouge_l_recall() -> None:
    assert lcs(["a", "b", "c", "d"], ["a", "c", "x", "d"]) == 3
    assert rouge_l_recall("alpha beta gamma delta", ["beta delta", "alpha gamma delta"]) == 0.75
    assert rouge_l_recall("", ["alpha"]) == 0.0 and rouge_l_recall("alpha", []) == 0.0


def test_faithfulness_is_the_mean_token_support_of_the_claims() -> None:
    contexts = ["Kestrel drone battery warranty lasts eighteen months."]
    assert faithfulness("Kestrel warranty lasts eighteen months. Crash damage is covered.", contexts) == 0.5
    assert faithfulness("Kestrel warranty; crash damage.", contexts) == 0.5
    assert faithfulness("", contexts) == 0.0 and faithfulness("The it.", contexts) == 0.0


def test_answer_relevancy_uses_the_ground_truth_when_there_is_one() -> None:
    assert answer_relevancy("kestrel warranty length", "kestrel warranty") == pytest.approx(2 / 3)
    assert answer_relevancy("kestrel warranty length", "kestrel warranty", "warranty eighteen months") == \
        pytest.approx((2 / 3 + 1 / 3) / 2)


@pytest.mark.parametrize(("index", "expected"), [
    (0, {"faithfulness": 0.5, "answer_relevancy": 0.7803, "context_recall": 0.6364}),   # ROUGE-L recall
    (1, {"faithfulness": 0.9, "answer_relevancy": 0.7662, "context_recall": 1.0}),      # ids: doc-0004 found
    (2, {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.5}),         # hallucinated; 1 of 2 ids
    (3, {"faithfulness": 0.5, "answer_relevancy": 0.5625, "context_recall": 1.0}),
    (4, {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.0}),         # no answer, no context
])
def test_fixed_golden_set_gives_fixed_scores(index: int, expected: dict[str, float]) -> None:
    assert score_sample(fixed_samples()[index]) == expected


def _service_samples(mode: str) -> list[Sample]:
    docs = corpus_docs(200, 1)
    out = []
    for g in yaml.safe_load((DATA / "golden.yaml").read_text()):
        hits = retrieve(g["question"], docs, k=3, mode=mode)
        answer = good_answer(g["question"], hits) if mode == "good" else bad_answer(g["question"])
        out.append(Sample(g["id"], g["question"], g["ground_truth"], answer, [h.doc.text for h in hits],
                          [h.doc.id for h in hits], g["sources"]))
    return out


@pytest.mark.parametrize(("mode", "means"), [
    ("good", {"faithfulness": 1.0, "answer_relevancy": 0.9891, "context_recall": 1.0}),
    ("bad", {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.0}),
])
async def test_reference_service_golden_set_regression(mode: str, means: dict[str, float]) -> None:
    scores = await LexicalScorer().score(_service_samples(mode))
    assert len(scores) == 20
    assert {m: round(sum(s[m] for s in scores) / 20, 4) for m in means} == means
