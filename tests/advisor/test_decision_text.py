"""The decision returns data and its prose is built from the choices: the method sentence names the method the
choice made, "cheapest" is computed, and the assumptions read live values."""

import ast
from pathlib import Path

import pytest

from advisor.decide.situation import Situation
from advisor.formulas.setup import TrainingSetup
from advisor.render.decision_text import METHOD_LABELS, recommend

ROOT = Path(__file__).resolve().parents[2]


def test_the_decision_imports_no_rendering():
    for path in (ROOT / "advisor" / "decide").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("advisor.render", "advisor.cli")), f"{path.name}: {node.module}"


SITUATIONS = [
    dict(tokens=2e9), dict(tokens=2e9, api_sufficient=False), dict(tokens=2e9, api_sufficient=False, gpus=1),
    dict(tokens=2e9, api_sufficient=False, gpu="A10G", gpus=1), dict(tokens=200e9, api_sufficient=False, task="language"),
    dict(tokens=5e9, api_sufficient=False, task="domain"), dict(tokens=5e9, api_sufficient=False, budget_usd=100),
    dict(tokens=2e9, api_sufficient=False, base_model="Llama-3.1-70B", gpus=2),
    dict(tokens=2e9, api_sufficient=False, deadline_days=0.5),
]


@pytest.mark.parametrize("fields", SITUATIONS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_the_method_sentence_names_the_method_chosen(fields):
    rec = recommend(Situation(**fields))
    finding = next(r for r in rec.reasons if r.rule == "method_choice")
    training = finding.numbers["training_method"]
    if rec.method in METHOD_LABELS:
        assert training == rec.method
    sentence = finding.finding.removeprefix("No training is chosen; if you train, ")
    assert sentence.startswith(f"{METHOD_LABELS[training]} ("), sentence
    options = {o.method: o for o in rec.options}
    viable = [o for o in options.values() if o.method in METHOD_LABELS and o.viable]
    if "(the cheapest viable one)" in sentence:
        assert options[training].cost_usd == min(o.cost_usd for o in viable)


def test_a_costlier_choice_says_what_the_cheaper_method_would_cost():
    rec = recommend(Situation(tokens=5e9, api_sufficient=False, task="domain"))
    sentence = next(r for r in rec.reasons if r.rule == "method_choice").finding
    options = {o.method: o for o in rec.options}
    assert rec.method == "full" and options["lora"].cost_usd < options["full"].cost_usd
    assert "cheapest" not in sentence and f"LoRA would cost ${options['lora'].cost_usd:,.0f}" in sentence


def test_the_assumptions_read_the_costed_setup():
    text = " ".join(recommend(Situation(tokens=2e9)).assumptions)
    rank = {f.name: f.default for f in __import__("msgspec").structs.fields(TrainingSetup)}["lora_rank"]
    assert f"LoRA r={rank} " in text and "no communication overhead" not in text
