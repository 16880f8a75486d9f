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
    length_factor,
    polarity,
    rouge_l_recall,
    score_sample,
    token_seq,
)
from tests.ragservice.retrieval import Hit, bad_answer, gamed_answer, good_answer, retrieve
from tests.support.corpus import corpus_docs

DATA = Path(__file__).resolve().parents[1] / "data"


def fixed_samples() -> list[Sample]:
    items = [json.loads(line) for line in (DATA / "golden_lexical.jsonl").read_text().splitlines() if line]
    return [
        Sample(
            d["id"],
            d["question"],
            d["ground_truth"],
            d["answer"],
            d["contexts"],
            d.get("context_ids", []),
            d.get("sources", []),
        )
        for d in items
    ]


def test_tokens_drop_stop_words_and_plural_s() -> None:
    assert token_seq("The Kestrel warranty lasts 18 months, glass and gas!") == [
        "kestrel",
        "warranty",
        "last",
        "18",
        "month",
        "glass",
        "gas",
    ]


def test_negations_and_numbers_are_tokens() -> None:
    assert token_seq("It doesn't cover water, nor sand; we cannot say no.") == [
        "not",
        "cover",
        "water",
        "nor",
        "sand",
        "not",
        "say",
        "no",
    ]
    assert polarity(token_seq("covers swelling but not water damage")) == ({"water"}, {"cover", "swelling", "damage"})


def test_contradictions_count_against_faithfulness() -> None:
    ctx = ["Kestrel drone battery warranty lasts eighteen months and covers swelling but not water damage."]
    assert faithfulness("The warranty lasts eighteen months.", ctx) == 1.0
    assert faithfulness("The warranty lasts nineteen months.", ctx) == 0.0  # a number in no context
    assert faithfulness("The warranty lasts 18 months.", ctx) == 0.0  # digits are not the word (a known limit)
    assert faithfulness("The warranty does not last eighteen months.", ctx) == 0.0  # negated, never negated there
    assert faithfulness("The warranty covers water damage.", ctx) == 0.0  # stated, only ever negated there
    # A limit, on the safe side: a faithful paraphrase that moves the negation reads as a contradiction.
    assert faithfulness("Water damage is not covered.", ctx) == 0.0
    assert faithfulness("It does not cover water.", ctx) == 0.0


def test_answers_past_the_ground_truth_scale_lose_relevancy() -> None:
    gt = "The warranty lasts eighteen months."  # 4 tokens: up to 24 tokens keep the full score
    assert length_factor("warranty eighteen months", gt, "q") == 1.0
    assert length_factor(" ".join(["warranty eighteen month"] * 16), gt, "q") == 0.5
    dump = "The warranty lasts eighteen months. " + "Unrelated filler words here. " * 40
    assert answer_relevancy("How long is the warranty?", dump, gt) < 0.25


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
    """The ground truth's half counts what it adds to the question (here eighteen, month): an answer
    that only restates the question gets none of it."""
    assert answer_relevancy("kestrel warranty length", "kestrel warranty") == pytest.approx(2 / 3)
    assert answer_relevancy("kestrel warranty length", "kestrel warranty", "warranty eighteen months") == pytest.approx(
        (2 / 3 + 0) / 2
    )
    assert answer_relevancy(
        "kestrel warranty length", "kestrel warranty eighteen months", "warranty eighteen months"
    ) == pytest.approx((2 / 3 + 1) / 2)


# Changed by issue 20 (negations kept, relevancy counts what the ground truth adds to the question):
# L1 relevancy 0.7803 -> 0.6667 and recall 0.6364 -> 0.5833 (its ground truth's "not" is in no context),
# L2 relevancy 0.7662 -> 0.7571, L4 relevancy 0.5625 -> 0.5833; L3 and L5 unchanged.
@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (0, {"faithfulness": 0.5, "answer_relevancy": 0.6667, "context_recall": 0.5833}),  # ROUGE-L recall
        (1, {"faithfulness": 0.9, "answer_relevancy": 0.7571, "context_recall": 1.0}),  # ids: doc-0004 found
        (2, {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.5}),  # hallucinated; 1 of 2 ids
        (3, {"faithfulness": 0.5, "answer_relevancy": 0.5833, "context_recall": 1.0}),
        (4, {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.0}),  # no answer, no context
    ],
)
def test_fixed_golden_set_gives_fixed_scores(index: int, expected: dict[str, float]) -> None:
    assert score_sample(fixed_samples()[index]) == expected


def _service_samples(mode: str) -> list[Sample]:
    """What the reference service answers the golden set in each answer mode (tests/ragservice)."""
    docs = corpus_docs(200, 1)
    out = []
    for g in yaml.safe_load((DATA / "golden.yaml").read_text()):
        hits = (
            [Hit(d, 0.0) for d in docs[:20]]
            if mode == "dump"
            else retrieve(g["question"], docs, k=3, mode="bad" if mode == "bad" else "good")
        )
        answer = (
            good_answer(g["question"], hits)
            if mode == "good"
            else bad_answer(g["question"])
            if mode == "bad"
            else gamed_answer(mode, g["question"], hits, [h.doc for h in hits])
        )
        out.append(
            Sample(
                g["id"],
                g["question"],
                g["ground_truth"],
                answer,
                [h.doc.text for h in hits],
                [h.doc.id for h in hits],
                g["sources"],
            )
        )
    return out


# Before issue 20 the lexical scorer passed dump (1.00/0.99/1.00), negate (1.00/0.99/1.00) and
# wrong_number (0.92/0.93/1.00) against the 0.85/0.78/0.70 thresholds; echo failed by 0.01 (0.7658).
# Each now fails a threshold (marked). foreign: a faithful answer in other words fails too (a false FAIL
# lexical scoring cannot avoid: README "Lexical scoring").
@pytest.mark.parametrize(
    ("mode", "means"),
    [
        ("good", {"faithfulness": 1.0, "answer_relevancy": 0.9891, "context_recall": 1.0}),
        ("bad", {"faithfulness": 0.0, "answer_relevancy": 0.0, "context_recall": 0.0}),
        ("canned", {"faithfulness": 0.0063, "answer_relevancy": 0.0042, "context_recall": 1.0}),
        ("echo", {"faithfulness": 0.9783, "answer_relevancy": 0.5, "context_recall": 1.0}),  # relevancy
        ("dump", {"faithfulness": 1.0, "answer_relevancy": 0.0833, "context_recall": 1.0}),  # relevancy
        ("negate", {"faithfulness": 0.55, "answer_relevancy": 0.9891, "context_recall": 1.0}),  # faithfulness
        ("wrong_number", {"faithfulness": 0.4, "answer_relevancy": 0.8816, "context_recall": 1.0}),  # faithfulness
        ("foreign", {"faithfulness": 0.8177, "answer_relevancy": 0.9658, "context_recall": 1.0}),  # faithfulness
    ],
)
async def test_reference_service_golden_set_regression(mode: str, means: dict[str, float]) -> None:
    scores = await LexicalScorer().score(_service_samples(mode))
    assert len(scores) == 20
    assert {m: round(sum(s[m] for s in scores) / 20, 4) for m in means} == means
    passes = means["faithfulness"] >= 0.85 and means["answer_relevancy"] >= 0.78 and means["context_recall"] >= 0.7
    assert passes is (mode == "good")
