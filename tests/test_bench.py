"""The benchmarks still run (on a tiny model, on the CPU), so they cannot rot between GPU sessions."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--tiny", "--out", str(out),
                           "--variant", "stock-loss:train.fused_loss=false"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"gpu", "lora_speedup", "qlora_speedup", "lora_mfu", "qlora_mfu"} <= result.keys()
    for run in ("lora_ours", "lora_baseline", "qlora_ours", "qlora_baseline"):
        assert result[run]["tokens_per_second"] > 0 and result[run]["peak_memory_gib"] > 0
    assert 0 < result["lora_mfu"] < 1 and result["lora_speedup"] > 0
    assert "speed-up" in proc.stdout
    for method in ("lora", "qlora"):  # the A/B variant ran too, with its override
        variant = result["variants"][f"{method}_stock-loss"]
        assert variant["overrides"] == ["train.fused_loss=false"] and variant["tokens_per_second"] > 0
    assert "stock-loss" in proc.stdout
    assert result["gradient_checkpointing"] == "auto"  # CPU: nothing to size against, so no run recomputes
    assert not any(result[run]["gradient_checkpointing"] for run in ("lora_ours", "lora_baseline", "qlora_ours", "qlora_baseline"))
    # each pipeline in its own process, paired: per-pair ratios against the better baseline, with their spread
    assert "trainer" in result["baselines"] and result["lora_baseline"]["pipeline"] in result["baselines"]
    for method in ("lora", "qlora"):
        assert len(result[f"{method}_pairs"]) == result["pairs"] >= 1
        assert {"speedup", "memory_ratio", "rss_ratio"} <= result[f"{method}_spread"].keys()
        assert result[f"{method}_memory_ratio"] > 0 and result[f"{method}_rss_ratio"] > 0
        assert result[f"{method}_ours"]["peak_memory_kind"] == "live tensor bytes"
        assert result[f"{method}_ours"]["rss_peak_gib"] > 0


def test_speed_benchmark_gives_each_run_checkpointing_as_needed_to_fit():
    """--checkpointing auto: the baseline's choice comes from the estimate of its own (stock-loss) peak, ours from the
    runner's. The 8B LoRA recipe (2k tokens, dropout 0.05) without it, once the allocator's reserve fitted to published
    measurements is counted (docs/estimation.md): at micro-batch 5 ours 122.6 GiB, the baseline more (the whole
    micro-batch's logits), so on 135 GiB (121.5 usable at 90%) both need it; at micro-batch 4 (ours 101.2 GiB, the
    baseline 118.1) neither does."""
    from bench.speed import baseline_checkpointing

    from advisor.plan.estimate import estimate_recipe
    from advisor.plan.recipe import load_recipe
    recipe = load_recipe(ROOT / "recipes" / "llama3.1-8b-lora.yaml")
    assert recipe.train.gradient_checkpointing == "auto" and recipe.train.fused_loss
    five = load_recipe(ROOT / "recipes" / "llama3.1-8b-lora.yaml", ["train.micro_batch=5"])
    assert baseline_checkpointing(five, 135.0) is True
    assert estimate_recipe(five, device_memory_gib=135.0).gradient_checkpointing is True
    assert recipe.train.micro_batch == 4
    assert baseline_checkpointing(recipe, 135.0) is False
    assert estimate_recipe(recipe, device_memory_gib=135.0).gradient_checkpointing is False
    assert baseline_checkpointing(recipe, None) is True  # no device: sized against the recipe's launch.gpu, an H100
    assert baseline_checkpointing(load_recipe(ROOT / "recipes" / "llama3.1-8b-lora.yaml",
                                              ["train.gradient_checkpointing=true"]), None) is True


def test_fused_loss_benchmark_smoke(tmp_path):
    out = tmp_path / "fused.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "fused_loss.py"), "--hidden", "64", "--intermediate", "128",
                    "--heads", "4", "--layers", "1", "--vocab", "8192", "--seq-len", "128", "--micro-batches", "2",
                    "--repeats", "1", "--out", str(out)], check=True, capture_output=True, timeout=300)
    runs = json.loads(out.read_text())["runs"]
    stock, fused = runs
    assert stock["loss"] == "stock" and fused["loss"].startswith("fused")
    assert fused["peak_bytes"] < stock["peak_bytes"] and fused["predicted_loss_bytes"] > 0


def test_advisor_latency_benchmark_smoke(tmp_path):
    out = tmp_path / "latency.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "advisor_latency.py"), "--runs", "2", "--breakdown",
                    "--against", str(ROOT), "--out", str(out)], check=True, capture_output=True, timeout=180)
    result = json.loads(out.read_text())
    assert result["recommend_seconds"] > 0 and result["heavy_modules_imported"] == []
    stages = result["breakdown"]["median_seconds"]  # every stage ran, the command last
    assert list(stages) == ["python", "typer", "our_modules", "command"]
    assert all(v > 0 for v in stages.values()) and result["breakdown"]["aside_median_seconds"]["typer_and_pydantic"] > 0
    assert sum(result["breakdown"]["increment_seconds"].values()) == pytest.approx(stages["command"], abs=1e-3)
    paired = result["paired"]  # this checkout against itself: both sides ran, the ratios are of their times
    assert paired["ours_median_seconds"] > 0 and paired["theirs_median_seconds"] > 0
    assert 0 < paired["ratio_min"] <= paired["ratio_median"] <= paired["ratio_max"]


def test_record_classes_benchmark_smoke(tmp_path):
    out = tmp_path / "classes.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "record_classes.py"), "--runs", "1", "--classes", "2",
                    "--fields", "4", "--out", str(out)], check=True, capture_output=True, timeout=120)
    median = json.loads(out.read_text())["median"]
    assert set(median) == {"dataclass", "msgspec_struct"}
    assert all(v >= 0 for kind in median.values() for v in kind.values())
