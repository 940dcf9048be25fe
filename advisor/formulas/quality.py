"""Quality of a model's answers: loss to perplexity, and the SQuAD answer metrics (exact, normalised match, token F1).

Pure functions on numbers and strings, so `advisor compare` reads a run's eval.json without torch; the runner's
`advisor eval` (runners.evaluate) computes every row's score with them.
"""

import math
import re
import string
from collections import Counter
from collections.abc import Iterable

# SQuAD's normalisation (Rajpurkar et al. 2016, the official evaluate-v1.1.py and evaluate-v2.0.py): English articles
# and ASCII punctuation carry no answer content.
ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = frozenset(string.punctuation)


def perplexity_from_loss(mean_loss_nats: float) -> float:
    """Perplexity = exp(mean cross-entropy per target token, in nats) (Jelinek et al. 1977; Hugging Face's
    "Perplexity of fixed-length models"). Overflows to inf past a mean loss of ~709 nats."""
    try:
        return math.exp(mean_loss_nats)
    except OverflowError:
        return math.inf


def normalize_answer(text: str) -> str:
    """SQuAD's normalize_answer (evaluate-v1.1.py): lower case, drop punctuation, drop the articles a/an/the,
    collapse whitespace — in that order."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> bool:
    """The answer as written, leading and trailing whitespace aside (a generation often ends in a newline)."""
    return prediction.strip() == reference.strip()


def normalized_match(prediction: str, reference: str) -> bool:
    """SQuAD's exact_match_score: equal after normalize_answer."""
    return normalize_answer(prediction) == normalize_answer(reference)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's f1_score (evaluate-v2.0.py): the harmonic mean of token precision and recall over the normalised
    answers' whitespace tokens, counted with multiplicity; 1.0 when both are empty, 0.0 when only one is."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def mean_score(scores: Iterable[float | bool]) -> float | None:
    """The mean of per-row scores (a match counts 1), or None over no rows."""
    values = [float(s) for s in scores]
    return sum(values) / len(values) if values else None


def delta(adapter: float | None, base: float | None) -> float | None:
    """adapter - base, where both were measured: negative is better for a loss, positive for a match rate."""
    return None if adapter is None or base is None else adapter - base
