"""The answer metrics and perplexity (advisor.formulas.quality) against values computed by hand, SQuAD-style."""

import math

import pytest

from advisor.formulas.quality import (delta, exact_match, mean_score, normalize_answer, normalized_match,
                                      perplexity_from_loss, token_f1)


def test_normalize_answer_as_squad_does():
    # lower case, punctuation out, articles out, whitespace collapsed (SQuAD evaluate-v1.1.py normalize_answer)
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("  An apple,  a day ") == "apple day"
    assert normalize_answer("theory of the atom") == "theory of atom"  # "the" inside "theory" is not an article
    assert normalize_answer("U.S.A.") == "usa"


def test_exact_and_normalized_match():
    assert exact_match("127\n", "127") and not exact_match("127.", "127")
    assert not exact_match("The cat", "cat") and normalized_match("The cat.", "cat")
    assert not normalized_match("cats", "cat")


def test_token_f1_by_hand():
    # prediction {cat, sat}, reference {cat, sat, down}: precision 2/2, recall 2/3, F1 = 2 (1)(2/3) / (1 + 2/3) = 0.8
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    # counted with multiplicity: x y y against y y y z shares two y: precision 2/3, recall 2/4, F1 = 4/7
    assert token_f1("x y y", "y y y z") == pytest.approx(4 / 7)
    assert token_f1("Paris", "London") == 0.0
    assert token_f1("JUNGLE", "jungle") == 1.0
    # SQuAD v2: an empty answer scores 1 against an empty reference, 0 against anything else
    assert token_f1("", "") == 1.0 and token_f1("The", "a") == 1.0
    assert token_f1("cat", "") == 0.0 and token_f1("", "cat") == 0.0


def test_perplexity_from_mean_loss():
    assert perplexity_from_loss(0.0) == 1.0
    assert perplexity_from_loss(math.log(259)) == pytest.approx(259)  # a uniform guess over the byte vocabulary
    assert perplexity_from_loss(1000.0) == math.inf


def test_means_and_deltas():
    assert mean_score([True, False, True, True]) == 0.75
    assert mean_score([0.5, 1.0]) == 0.75 and mean_score([]) is None
    assert delta(0.5, 0.25) == 0.25 and delta(None, 1.0) is None and delta(1.0, None) is None
