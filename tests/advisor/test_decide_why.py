"""Issue 12's "Why", bullet by bullet: each situation reproduced, the corrected behaviour asserted."""

import json

import pytest
from msgspec.structs import replace

from advisor.decide.costing import cost_finetune, rule_usage_break_even, serving_plan
from advisor.plan.serving import tensor_parallel_degrees
from advisor.render.decision_text import recommend
from advisor.decide.situation import Situation
from advisor.plan.sizing import CountPlan, choose_gpu_count, valid_gpu_counts
from tests.conftest import run_cli


def option(rec, method):
    return next(o for o in rec.options if o.method == method)


# --- the budget is a constraint ----------------------------------------------------------------------

def test_budget_is_respected_on_prem():
    """`--tokens 5e9 --on-prem --budget 500` starred LoRA at $762: now every plan over $500 is not viable, saying by
    how much, and the answer is one that fits (the open model self-hosted, no training)."""
    rec = recommend(Situation(tokens=5e9, on_prem=True, budget_usd=500))
    assert rec.viable and rec.options[0].viable and rec.method == "self-host+retrieval"
    lora = option(rec, "lora")
    assert lora.cost_usd > 500 and not lora.viable
    budget = next(v for v in lora.why_not if v.constraint == "budget")
    assert budget.needed == pytest.approx(lora.cost_usd) and budget.limit == 500 and budget.over_by > 1


def test_nothing_fits_says_so_with_costed_alternatives():
    """`--tokens 1T --task language --api-insufficient --budget 1000` recommended PRETRAIN at $1.2M: now it says
    nothing fits, and lists plans that would, each costed and within the budget."""
    rec = recommend(Situation(tokens=1e12, task="language", api_sufficient=False, budget_usd=1000))
    assert not rec.viable and rec.tier != "pretrain"
    assert rec.reasons[-1].finding.startswith("Nothing fits your constraints")
    assert rec.nearest_viable
    for alt in rec.nearest_viable:
        assert alt.option.viable and alt.option.cost_usd <= 1000 and alt.option.wall_days is not None


def test_nothing_fits_cli(capsys):
    code, out, err = run_cli(["recommend", "--tokens", "1T", "--task", "language", "--api-insufficient",
                              "--budget", "1000"], capsys)
    assert code == 0, err
    assert "NOTHING FITS YOUR CONSTRAINTS" in out and "Plans that would fit" in out and "train on" in out


# --- calendar time, on the user's cluster --------------------------------------------------------------

def test_lora_runs_on_the_cluster_not_one_gpu():
    """With 8 A100s, LoRA on 2B tokens was shown on 1 GPU (7 days); now on 8, under a day, wall days shown."""
    rec = recommend(Situation(tokens=2e9))
    lora = option(rec, "lora")
    assert lora.gpus == 8 and lora.wall_days < 1
    assert lora.wall_days == pytest.approx(lora.gpu_hours / 8 / 24)


def test_availability_stretches_wall_days():
    full = option(recommend(Situation(tokens=2e9)), "lora")
    half = option(recommend(Situation(tokens=2e9, availability=0.5)), "lora")
    assert half.gpu_hours == pytest.approx(full.gpu_hours) and half.wall_days == pytest.approx(2 * full.wall_days)


def test_years_long_pretrain_and_unfittable_model_are_not_viable():
    """`--tokens 1T`: a ~50B pretrain that cannot fit 8 x 80 GB and takes years was "viable"."""
    pretrain = option(recommend(Situation(tokens=1e12)), "pretrain")
    assert not pretrain.viable
    assert {v.constraint for v in pretrain.why_not} >= {"gpus", "deadline"}


def test_deadline_flag_and_count_choice(capsys):
    """--deadline 36h: LoRA on 5B tokens (~426 GPU-hours) needs 8 GPUs for 2.2 days: over, by 1.5x."""
    rec = recommend(Situation(tokens=5e9, api_sufficient=False, deadline_days=1.5))
    lora = option(rec, "lora")
    v = next(v for v in lora.why_not if v.constraint == "deadline")
    assert v.limit == 1.5 and v.needed == pytest.approx(lora.wall_days)
    code, out, _ = run_cli(["recommend", "--tokens", "5e9", "--api-insufficient", "--deadline", "36h", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["deadline_days"] == 1.5 and not data["deadline_assumed"]
    lora = next(o for o in data["options"] if o["method"] == "lora")
    assert {"wall_days", "viable", "why_not"} <= lora.keys() and lora["why_not"][0]["constraint"] == "deadline"


def test_gpu_count_policy():
    assert valid_gpu_counts(8) == [1, 2, 4, 8] and valid_gpu_counts(6) == [1, 2, 4]
    plans = [CountPlan(1, True, 100, 4.2), CountPlan(2, True, 100, 2.1), CountPlan(4, True, 90, 0.9), CountPlan(8, False, 80, 0.4)]
    assert choose_gpu_count(plans, 10).gpus == 4   # fewest GPU-hours among those that fit
    assert choose_gpu_count(plans[:2], 10).gpus == 2  # a tie goes to the faster
    assert choose_gpu_count(plans[:2], 1).gpus == 2  # none meets the deadline: the fastest
    assert choose_gpu_count([CountPlan(1, False, 1, 1)], 10) is None


# --- pretraining judged by its own numbers ---------------------------------------------------------------

def test_pretraining_only_when_it_beats_the_base():
    rec = recommend(Situation(tokens=1e12, task="language", on_prem=True, gpus=4096, gpu="H100-SXM", deadline_days=365))
    reason = next(r for r in rec.reasons if r.rule == "pretraining_viability").numbers
    assert reason["own_model_loss"] > reason["base_model_loss"]       # 50B on 1T loses to Llama-3.1-8B on 15T
    pretrain = option(rec, "pretrain")
    assert not pretrain.viable and [v.constraint for v in pretrain.why_not] == ["beats_base"]
    assert rec.tier == "full" and "continue pretraining" in pretrain.note
    good = recommend(Situation(tokens=1e11, task="language", on_prem=True, base_model="Qwen2.5-0.5B", gpu="H100-SXM"))
    assert good.tier == "pretrain" and good.options[0].viable


# --- the tier reads the data, not the defaults -------------------------------------------------------------

def test_default_states_its_assumption(capsys):
    code, out, _ = run_cli(["recommend", "--docs", "500k", "--tokens", "2e9"], capsys)
    assert code == 0 and "Recommendation: API" in out
    assert "assumed: an off-the-shelf model meets your bar — say --api-insufficient if it doesn't" in out.lower()


def test_api_insufficient_makes_the_api_row_not_viable():
    rec = recommend(Situation(tokens=2e9, api_sufficient=False))
    api = option(rec, "prompt+retrieval")
    assert not api.viable and api.why_not[0].constraint == "quality_bar"
    assert rec.tier == "peft"


def test_volume_alone_does_not_call_for_training():
    rec = recommend(Situation(tokens=2e9, requests_per_day=1e6, peak_to_average=1.0))
    assert rec.tier == "api" and rec.method == "self-host+retrieval"


def test_knowledge_on_prem_is_self_hosted_retrieval(tmp_path, capsys):
    """`--tokens 50M --on-prem --task knowledge` said "retrieval beats fine-tuning" and then fine-tuned."""
    rec = recommend(Situation(tokens=5e7, on_prem=True, task="knowledge"))
    assert rec.tier == "api" and rec.method == "self-host+retrieval"
    assert "retrieval" in rec.reasons[-1].finding
    report = tmp_path / "plan.md"
    code, _, _ = run_cli(["recommend", "--tokens", "50M", "--on-prem", "--task", "knowledge", "--report", report], capsys)
    text = report.read_text()
    assert code == 0 and "Hosted API meets the bar: yes" not in text and "hosted APIs excluded" in text


# --- break-even in steps ---------------------------------------------------------------------------------

def test_break_even_reports_ranges_when_the_curve_crosses_more_than_once():
    s = Situation(tokens=2e9, api="gpt-6-luna", gpus=64, peak_to_average=1.0)
    usage = rule_usage_break_even(s)
    assert len(usage.ranges) > 1
    for lo, hi in usage.ranges:
        inside = recommend(replace(s, requests_per_day=lo * 1.01))
        assert inside.method == "self-host+retrieval"
        if hi is not None:
            past = recommend(replace(s, requests_per_day=hi * 1.01))
            assert past.method == "prompt+retrieval"
    assert "tokens-per-request" in usage.finding.finding and "25% output" in usage.finding.finding
    longer = rule_usage_break_even(replace(s, tokens_per_request=4000))
    assert "4k requests" not in longer.finding.finding and "x 4k tokens" in longer.finding.finding


def test_serving_uses_valid_tensor_parallel_degrees():
    assert tensor_parallel_degrees(64, limit=64) == [1, 2, 4, 8, 16, 32, 64]
    assert tensor_parallel_degrees(64) == [1, 2, 4, 8]   # within a node (SERVING_MAX_TENSOR_PARALLEL)
    assert tensor_parallel_degrees(40) == [1, 2, 4, 8]
    assert tensor_parallel_degrees(24) == [1, 2, 4, 8]
    assert tensor_parallel_degrees(20) == [1, 2, 4]
    plan = serving_plan(Situation(tokens=1e9, base_model="Llama-3.1-70B"))
    assert plan.degree == 4 and plan.gpus % 4 == 0   # 70B in bf16 + KV cache: 158 GiB, over 2 x 74.5, so 4 (not 3)


# --- one source of truth -------------------------------------------------------------------------------

def test_estimate_and_recommend_agree(capsys):
    rec = recommend(Situation(tokens=2e9))
    for method in ("lora", "qlora", "full"):
        o = option(rec, method)
        code, out, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--method", method, "--gpu", "A100-80GB",
                                  "--gpus", str(o.gpus), "--tokens", "2e9", "--json"], capsys)
        assert code == 0, err
        data = json.loads(out)
        assert data["gpu_hours"] == pytest.approx(o.gpu_hours) and data["peak_memory_gib"] == pytest.approx(o.memory_gib_per_gpu)
        assert data["gradient_checkpointing"] == o.gradient_checkpointing


def test_estimate_checkpointing_defaults_to_auto(capsys):
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H200", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["gradient_checkpointing"] is False and data["gradient_checkpointing_reason"].startswith("auto")
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H200", "--gradient-checkpointing", "--json"], capsys)
    assert json.loads(out)["gradient_checkpointing"] is True


def test_one_headline_compute_optimal_size(capsys):
    code, out, _ = run_cli(["recommend", "--tokens", "2e9"], capsys)
    line = next(l for l in out.splitlines() if l.startswith("Data:"))
    assert "~100M parameters (20 tokens/parameter" in line and "alternatives:" in line
    assert "bounds pretraining from scratch, not fine-tuning" in line


def test_finetune_option_uses_the_cluster_and_the_runners_rules():
    o = cost_finetune(Situation(tokens=2e9), "full")
    assert o.gpus == 8 and o.sharding in ("ddp", "fsdp") and o.gradient_checkpointing is not None
