"""The phase gate: a proposal ("full fine-tune 7B on 2B tokens, 8 x A100 for two weeks, $150k") against the formulas."""

import json

import pytest

from advisor.decide.costing import cost_finetune
from advisor.core.errors import AdvisorError
from advisor.decide.review import Proposal, resolve_model, review_proposal
from advisor.decide.situation import Situation
from tests.conftest import run_cli

SEED = ["review", "--model", "7B", "--method", "full", "--gpus", "8xA100", "--days", "14", "--cost", "150k", "--tokens", "2e9"]


def test_size_reads_as_a_catalog_model_and_says_which():
    arch, note = resolve_model("7B")
    assert arch.name in ("Llama-2-7B", "Mistral-7B", "Qwen2.5-7B") and arch.name in note and "7B read as" in note
    assert resolve_model("Llama-2-7B") == (resolve_model("Llama-2-7B")[0], "")
    with pytest.raises(AdvisorError, match="no catalog model"):
        resolve_model("3T")


def test_seed_proposal_against_the_formulas():
    r = review_proposal(Proposal(model="7B", method="full", gpu="A100-80GB", gpus=8, days=14, cost_usd=150_000, tokens=2e9))
    computed = cost_finetune(Situation(tokens=2e9, base_model=r.model, gpus=8, deadline_days=14, budget_usd=150_000),
                             "full", counts=[8])
    assert r.computed.gpu_hours == pytest.approx(computed.gpu_hours) and r.computed.gpus == 8
    assert r.proposed_gpu_hours == 8 * 14 * 24
    assert r.ratio_gpu_hours == pytest.approx(8 * 14 * 24 / computed.gpu_hours)
    assert r.ratio_cost == pytest.approx(150_000 / computed.cost_usd)
    assert r.implied_utilisation == pytest.approx(r.efficiency / r.ratio_gpu_hours)
    assert r.implied_usd_per_gpu_hour == pytest.approx(150_000 / (8 * 14 * 24))
    assert r.compute_optimal_params == pytest.approx(1e8)
    assert "bounds pretraining, not fine-tuning" in next(f for f in r.findings if f.rule == "proposal_compute_optimal").finding
    lora = next(c for c in r.cheaper if c.option.method == "lora")
    assert lora.saving_vs_computed_usd == pytest.approx(computed.cost_usd - lora.option.cost_usd)
    assert lora.saving_vs_computed_usd > 0
    assert lora.saving_vs_proposal_usd == pytest.approx(150_000 - lora.option.cost_usd)


def test_review_cli_text_and_json(capsys, tmp_path):
    code, out, err = run_cli(SEED, capsys)
    assert code == 0, err
    assert "proposal / formulas" in out and "implied utilisation" in out and "cheaper   lora" in out
    assert "read as" in out and "bounds pretraining from scratch, not fine-tuning" in out
    code, out, _ = run_cli(SEED + ["--json"], capsys)
    data = json.loads(out)
    assert {"ratio_gpu_hours", "ratio_cost", "implied_utilisation", "implied_usd_per_gpu_hour", "computed",
            "cheaper", "compute_optimal_params", "model_note"} <= data.keys()
    report = tmp_path / "review.md"
    code, _, _ = run_cli(SEED + ["--report", report], capsys)
    assert code == 0 and "## Review of the proposed plan" in report.read_text()


def test_recommend_report_includes_the_review_and_the_default_tier(capsys, tmp_path):
    """The seed case as a new user tries it: formulas' GPU-hours, dollars and days for full and LoRA, the ratio to
    the proposal, and the API/retrieval tier by default with its assumption stated."""
    report = tmp_path / "plan.md"
    code, out, err = run_cli(["recommend", "--docs", "500k", "--tokens", "2e9", "--proposal-model", "7B",
                              "--proposal-gpus", "8xA100", "--proposal-days", "14d", "--proposal-cost", "150k",
                              "--report", report], capsys)
    assert code == 0, err
    text = report.read_text()
    assert "Recommendation: API" in text and "meets the bar: assumed" in text
    assert "## Review of the proposed plan" in text and "x the GPU-hours" in text
    assert "| formulas | full" in text and "| cheaper | lora" in text
    assert "proposal_vs_decision" in text
    code, out, _ = run_cli(["recommend", "--tokens", "2e9", "--proposal-model", "7B", "--proposal-days", "14d", "--json"], capsys)
    data = json.loads(out)
    assert data["review"]["proposal"]["gpus"] == 8 and data["review"]["ratio_gpu_hours"] > 1


@pytest.mark.parametrize("args, needle", [
    (["review", "--model", "7B", "--tokens", "2e9", "--gpus", "8xB9"], "unknown GPU"),
    (["review", "--model", "7B", "--tokens", "2e9", "--gpus", "eight"], "8xA100"),
    (["review", "--model", "3T", "--tokens", "2e9"], "no catalog model"),
    (["review", "--model", "7B", "--tokens", "2e9", "--method", "dora"], "--method"),
    (["review", "--model", "7B", "--tokens", "2e9", "--days", "soon"], "duration"),
    (["recommend", "--tokens", "2e9", "--deadline", "7y"], "duration"),
    (["recommend", "--tokens", "2e9", "--proposal-days", "14d"], "--proposal-model"),
])
def test_bad_review_input_is_one_line_exit_2(capsys, args, needle):
    code, out, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_a_proposal_that_does_not_fit_its_gpus_says_so():
    r = review_proposal(Proposal(model="Llama-3.1-70B", method="full", gpu="L4", gpus=1, cost_usd=1000, tokens=2e9))
    assert r.computed.gpus > 1 and not r.computed.viable
    assert any(v.constraint == "gpus" for v in r.computed.why_not)
    assert r.computed_days == pytest.approx(r.computed.gpu_hours / r.computed.gpus / 24)
    assert "does not fit on the proposal's 1" in r.findings[0].finding
    assert r.implied_utilisation > 1 and "under-budgeted" in next(f for f in r.findings if f.rule == "proposal_implied").finding


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_review_and_recommend_price_the_same_job_at_the_same_efficiency(method):
    """One rate for one job: the option `recommend` prices and the proposal `review` checks, on the same model, GPU
    type and count, assume the same fraction of peak and give the same GPU-hours."""
    from advisor.render.decision_text import recommend
    rec = recommend(Situation(tokens=2e9, base_model="Llama-3.1-8B", gpu="A100-80GB", gpus=8, api_sufficient=False))
    option = next(o for o in rec.options if o.method == method)
    assert option.efficiency is not None and 0 < option.efficiency < 1
    r = review_proposal(Proposal(model="Llama-3.1-8B", method=method, gpu="A100-80GB", gpus=option.gpus, days=14,
                                 cost_usd=150_000, tokens=2e9))
    assert r.efficiency == pytest.approx(option.efficiency)
    assert r.computed.gpu_hours == pytest.approx(option.gpu_hours)
