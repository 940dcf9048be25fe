"""Intervals, MoE time, the network between nodes and one rate for estimate, recommend and review (issue 25)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.catalog import load as catalog
from advisor.formulas.setup import TrainingSetup
from advisor.formulas.step_time import collective_links, step_seconds, step_work
from advisor.plan.estimate import estimate_training, fit_verdict
from advisor.plan.uncertainty import MIN_GROUP_ROWS, choose_band, shipped_bands
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_bands_are_current_and_cover_70_to_90_percent_of_rows_left_out():
    done = subprocess.run([sys.executable, "bench/error_bands.py", "--check"], cwd=ROOT)
    assert done.returncode == 0, "run python bench/error_bands.py after changing the rows or the estimators"
    for quantity, c in shipped_bands()["coverage"].items():
        assert c["rows"] >= 50 and 0.70 <= c["covered"] <= 0.90, (quantity, c)


def test_a_group_with_few_rows_gives_way_to_a_wider_one_said_and_widened():
    groups = {"Hopper/lora/moe": {"rows": 2}, "*/*/*": {"rows": 40, "low": -0.2, "high": 0.2}}
    band = choose_band(groups, "Hopper", "lora", "moe", "throughput")
    assert band is not None and band.group == "*/*/*" and band.extrapolating and "2 published rows" in band.extrapolating
    assert band.high > 1.22 and band.low < 0.82  # exp(0.3), exp(-0.3): 1.5x the log width
    own = {"Ampere/full/dense": {"rows": MIN_GROUP_ROWS, "low": -0.1, "high": 0.1}}
    assert choose_band(own, "Ampere", "full", "dense", "memory").extrapolating is None
    assert choose_band({}, "Ampere", "full", "dense", "memory") is None


def test_fit_verdict_is_tight_between_the_estimate_and_its_upper_bound():
    assert fit_verdict(70.0, 75.0, 78.7)[0] == "fits"
    verdict, headroom = fit_verdict(76.9, 89.0, 78.7)
    assert verdict == "tight" and headroom == pytest.approx(1.8)
    assert fit_verdict(80.0, 90.0, 78.7)[0] == "does not fit"


def test_estimate_json_carries_intervals_memory_kinds_and_the_verdict(capsys):
    code, out, err = run_cli(["estimate", "--model", "Llama-3.1-70B", "--method", "full", "--gpu", "H100",
                              "--gpus", "16", "--tokens", "1e9", "--json"], capsys)
    assert code == 0, err
    e = json.loads(out)
    for key in ("tokens_per_second_per_gpu", "gpu_hours", "cost_usd", "peak_memory"):
        low, high = e[f"{key}_low" if key != "peak_memory" else "peak_memory_low_gib"], \
            e[f"{key}_high" if key != "peak_memory" else "peak_memory_high_gib"]
        point = e[key if key != "peak_memory" else "peak_memory_gib"]
        assert low < point < high, key
    assert e["memory_kind"] == "reserved" and e["peak_memory_allocated_gib"] < e["peak_memory_gib"] \
        < e["peak_memory_nvidia_smi_gib"]
    assert e["fit_verdict"] in ("fits", "tight", "does not fit") and e["interval_level"] == 0.8
    # Hopper full fine-tuning has measured rows of its own (the candidate rows, out of sample): its own interval
    assert e["interval_basis"]["throughput"].startswith("Hopper/full/dense")
    assert not any(n.startswith("extrapolating") for n in e["extrapolating"])


def test_a_70b_full_fine_tune_on_16_h100s_crosses_nodes_and_the_network_changes_it(capsys):
    def run(*extra):
        code, out, err = run_cli(["estimate", "--model", "Llama-3.1-70B", "--method", "full", "--gpu", "H100",
                                  "--gpus", "16", "--sharding", "fsdp", "--tokens", "1e9", *extra], capsys)
        assert code == 0, err
        return out
    default, slow = run(), run("--interconnect", "25")
    assert "across 2 nodes over a 400 Gb/s network per GPU" in default
    assert "across 2 nodes over a 25 Gb/s network per GPU" in slow
    hours = [float(t.split("GPU-hours: ")[1].split()[0].replace(",", "")) for t in (default, slow)]
    assert hours[1] > 1.5 * hours[0]


def test_a_ring_within_one_domain_never_uses_the_network():
    h100 = catalog.get_gpu("H100")
    inside, across = collective_links(h100, 8), collective_links(h100, 16)
    assert inside.nodes == 1 and inside.ring == inside.intra
    assert across.nodes == 2 and across.ring == min(across.intra, 8 * across.network)
    gb200 = catalog.get_gpu("GB200")
    assert collective_links(gb200, 64).nodes == 1  # an NVL72 rack is one NVLink domain


@pytest.mark.parametrize("model", ["Mixtral-8x7B", "Qwen3-30B-A3B", "gpt-oss-20b", "DeepSeek-V3", "GLM-4.5-Air"])
def test_moe_time_counts_the_experts_below_the_ceiling(model):
    arch, gpu = catalog.get_model(model), catalog.get_gpu("H100")
    e = estimate_training(TrainingSetup(arch=arch, method="lora", gpus=8), gpu, tokens=1e8)
    assert 0 < e.efficiency < 0.9 and not any("above the" in n for n in e.extrapolating)
    assert 0 < e.flops_breakdown["experts"] < e.flops_breakdown["total"]
    step = step_seconds(step_work(TrainingSetup(arch=arch, method="lora"), "none"), gpu)
    assert step.expert_s > 0 and step.expert_fraction < 0.9
    assert e.peak_memory_high_gib > e.peak_memory_gib and e.extrapolating  # few MoE rows: wider, and said


def test_review_and_recommend_give_the_same_efficiency_for_the_same_job():
    from advisor.decide.costing import cost_finetune
    from advisor.decide.review import Proposal, review_proposal
    from advisor.decide.situation import Situation
    proposal = Proposal(model="Llama-3.1-8B", tokens=2e9, method="full", gpus=8, gpu="A100-80GB", days=14)
    review = review_proposal(proposal)
    s = Situation(tokens=2e9, base_model="Llama-3.1-8B", gpu="A100-80GB", gpus=8)
    option = cost_finetune(s, "full", counts=[8])
    assert review.efficiency == pytest.approx(option.efficiency)
    assert review.computed.gpu_hours == pytest.approx(option.gpu_hours)


def test_recommend_gives_each_training_option_an_interval_on_hours_dollars_and_days(capsys):
    code, out, err = run_cli(["recommend", "--docs", "500k", "--tokens", "2e9", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    options = data["options"] if isinstance(data["options"], list) else list(data["options"].values())
    training = [o for o in options if o["tier"] in ("peft", "full", "pretrain") and o["gpus"]]
    assert training
    for o in training:
        assert o["gpu_hours_low"] < o["gpu_hours"] < o["gpu_hours_high"], o["method"]
        assert o["cost_usd_low"] < o["cost_usd"] < o["cost_usd_high"]
        assert o["wall_days_low"] < o["wall_days"] < o["wall_days_high"] and o["interval_basis"]


def test_an_interval_wholly_on_one_side_of_the_estimate_says_which_way_it_is_off():
    from advisor.plan.uncertainty import Band, biased_note
    assert biased_note(Band(0.8, 1.2, 20, "Ampere/lora/dense"), "throughput") is None
    slow = biased_note(Band(0.2, 0.4, 10, "Blackwell/lora/dense"), "throughput")
    assert slow and "0.20-0.40 x the estimate, all below it" in slow and "optimistic" in slow and "10 published" in slow
    more = biased_note(Band(1.1, 1.3, 9, "Hopper/*/*"), "memory")
    assert more and "all above it" in more and "optimistic (more memory in practice)" in more
