"""The benchmarks still run (on a tiny model, on the CPU), so they cannot rot between GPU sessions."""

import json
import statistics
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_speed_benchmark_smoke(tmp_path):
    """Every pipeline runs on the planned batches (the run stops otherwise), credited with the timed rows' real
    tokens; ratios against every baseline and the best one, for ours and for the ablation."""
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--tiny", "--no-noise-guard",
                           "--baselines", "trainer,trainer-chunked", "--ablations", "none",
                           "--variant", "stock-loss:train.fused_loss=false", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"gpu", "lora_speedup", "qlora_speedup", "lora_mfu", "qlora_mfu"} <= result.keys()
    assert result["lora_mfu"] is None and "CPU" in result["mfu_note"]  # a CPU's matmul probe is no peak
    assert result["complete"] and result["pairs"] == 1 and result["dropped"] == {"lora": 0, "qlora": 0}
    timed = result["timed_rows"]
    assert timed["tokens"] == sum(timed["row_lengths"]) and 0 < timed["labelled_tokens"] < timed["tokens"]
    assert result["labelled_token_share"] == pytest.approx(timed["labelled_tokens"] / timed["tokens"])
    for method in ("lora", "qlora"):
        ratios = result[f"{method}_ratios"]
        assert set(ratios) == {"ours", "ours:stock-loss"}
        assert set(ratios["ours"]) == {"trainer", "trainer-chunked", "best_baseline"}
        assert set(ratios["ours:stock-loss"]) == {"trainer", "trainer-chunked", "best_baseline", "ours"}
        assert result[f"{method}_speedup"] == ratios["ours"]["best_baseline"]["speedup"]["median"] > 0
        (pair,) = result[f"{method}_clean_pairs"]
        assert set(pair["runs"]) == {"ours", "ours:stock-loss", "trainer", "trainer-chunked"}
        for run in pair["runs"].values():  # real tokens credited: the timed rows over the timed seconds
            assert run["tokens_per_second"] * sum(run["step_seconds"]) == pytest.approx(timed["tokens"])
            assert run["labelled_tokens_per_second"] < run["tokens_per_second"]
            assert run["foreign_cpu_share"] is not None and run["step_outlier_ratio"] >= 1
        assert result[f"{method}_ours_stock-loss"]["fused_loss"] is False
        assert result[f"{method}_ours"]["fused_loss"] is True
        assert result[f"{method}_ours"]["peak_memory_kind"] == "live tensor bytes"
        assert result[f"{method}_ours"]["rss_peak_gib"] > 0
        assert result[f"{method}_baseline"]["pipeline"] in result["baselines"]
    assert result["gradient_checkpointing"] == "auto"  # CPU: nothing to size against, so no run recomputes
    assert not any(result[run]["gradient_checkpointing"] for run in ("lora_ours", "lora_baseline", "qlora_ours", "qlora_baseline"))
    assert "| lora | ours | trainer-chunked |" in proc.stdout


def test_speed_credit_refuses_other_batches_and_counts_real_tokens():
    from bench.speed import credit
    plan = [{"digest": str(i), "tokens": 100 + i, "labelled_tokens": 50} for i in range(5)]
    run = {"pipeline": "trainer", "digests": [str(i) for i in range(5)], "timed_steps": 2, "step_seconds": [1.0, 3.0]}
    got = credit(run, plan, warmup=2)
    assert got["tokens_per_second"] == pytest.approx((102 + 103) / 4.0)
    assert got["labelled_tokens_per_second"] == pytest.approx(100 / 4.0)
    assert got["step_outlier_ratio"] == pytest.approx((3 / 103) / statistics.median([1 / 102, 3 / 103]))
    with pytest.raises(RuntimeError, match="other batches than planned .* step 3"):
        credit(run | {"digests": ["0", "1", "x", "3", "4"]}, plan, warmup=2)


def test_speed_noise_guard_names_each_reason():
    from bench.speed import FOREIGN_CPU_MAX, PROBE_MIN_SHARE, STEP_OUTLIER_RATIO, noise_reasons
    calm = {"foreign_cpu_share": 0.01, "step_outlier_ratio": 1.1}
    assert noise_reasons({"ours": calm, "trl": calm}, 1.0, 1.0, guard=True) == []
    busy = {"ours": calm | {"foreign_cpu_share": FOREIGN_CPU_MAX + 0.05},
            "trl": calm | {"step_outlier_ratio": STEP_OUTLIER_RATIO + 0.5}}
    reasons = noise_reasons(busy, PROBE_MIN_SHARE * 0.9, 1.0, guard=True)
    assert len(reasons) == 3 and reasons[0].startswith("ours: other processes") and reasons[1].startswith("trl: a step")
    assert "matmul probe" in reasons[2]
    assert noise_reasons(busy, 0.1, 1.0, guard=False) == []  # --no-noise-guard: measured, kept


def test_speed_chunked_cross_entropy_baseline_equals_the_stock_loss():
    """The Trainer + chunked cross-entropy baseline computes transformers' loss (shifted, ignored labels out, mean
    over the labelled targets) and its gradients, whatever the chunk size."""
    import torch

    from bench.speed import chunked_cross_entropy
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(40, 16)
    labels = torch.randint(0, 40, (2, 9))
    labels[0, :4] = -100
    stock = torch.nn.functional.cross_entropy((hidden @ weight.T)[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1),
                                              ignore_index=-100)
    (expected,) = torch.autograd.grad(stock, hidden)
    for chunk in (1, 3, 1024):
        got = chunked_cross_entropy(hidden, weight, labels, chunk=chunk)
        assert got.item() == pytest.approx(stock.item(), rel=1e-6)
        (grad,) = torch.autograd.grad(got, hidden)
        torch.testing.assert_close(grad, expected)


def test_speed_benchmark_gives_each_run_checkpointing_as_needed_to_fit():
    """--checkpointing auto: the baseline's choice comes from the estimate of its own (stock-loss) peak, ours from the
    runner's. The 8B LoRA recipe (2k tokens, dropout 0.05) without it, once the allocator's reserve fitted to published
    measurements is counted (docs/estimation.md): at micro-batch 6 ours 132.7 GiB, the baseline more (the whole
    micro-batch's logits), so on 135 GiB (121.0 usable at 90%) both need it; at micro-batch 5 ours (113.2 GiB) does not
    and the baseline does; at micro-batch 4 (ours 93.7 GiB) neither does."""
    from bench.speed import baseline_checkpointing

    from advisor.plan.estimate import estimate_recipe
    from advisor.plan.recipe import load_recipe
    recipe = load_recipe(ROOT / "recipes" / "llama3.1-8b-lora.yaml")
    assert recipe.train.gradient_checkpointing == "auto" and recipe.train.fused_loss
    six = load_recipe(ROOT / "recipes" / "llama3.1-8b-lora.yaml", ["train.micro_batch=6"])
    assert baseline_checkpointing(six, 135.0) is True
    assert estimate_recipe(six, device_memory_gib=135.0).gradient_checkpointing is True
    five = load_recipe(ROOT / "recipes" / "llama3.1-8b-lora.yaml", ["train.micro_batch=5"])
    assert baseline_checkpointing(five, 135.0) is True
    assert estimate_recipe(five, device_memory_gib=135.0).gradient_checkpointing is False
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
