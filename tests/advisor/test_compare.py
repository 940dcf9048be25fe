"""compare's arithmetic and calibrate's fit, on synthetic reports whose true efficiency and overhead are known."""

import json
import math

import pytest

from advisor.catalog.load import get_gpu, get_model
from advisor.measure.compare import compare_report, fit_calibration, leave_one_out
from advisor.formulas.setup import TrainingSetup
from advisor.plan.estimate import estimate_training
from advisor.measure.runreport import LossSummary, PeakMemory, RunReport
from tests.conftest import run_cli


def synthetic(tmp_path, name, model="Llama-3.1-8B", method="lora", gpu="H100-SXM", tokens=5e7, efficiency=0.3,
              overhead=0.1, seq_len=2048, micro_batch=1, gpus=1) -> RunReport:
    g = get_gpu(gpu)
    setup = TrainingSetup(arch=get_model(model), method=method, seq_len=seq_len, micro_batch=micro_batch, gpus=gpus)
    est = estimate_training(setup, g, tokens, "synthetic")
    wall = est.total_flops / (gpus * g.peak_flops * efficiency)
    reserved = (est.peak_memory_gib - est.memory_gib["overhead"]) * (1 + overhead)
    report = RunReport(
        recipe=name, method=method, model=model, status="completed", steps=100, trainable_params=est.trainable_params,
        total_params=est.total_params, tokens=int(tokens), processed_tokens=int(tokens), wall_seconds=wall, gpus=gpus,
        gpu_hours=wall * gpus / 3600, tokens_per_second=tokens / wall, model_flops=est.model_flops,
        executed_flops=est.total_flops, mfu=est.model_flops / (wall * gpus * g.peak_flops), peak_flops_per_gpu=g.peak_flops,
        peak_memory_gib=PeakMemory(allocated=reserved * 0.9, reserved=reserved), loss=LossSummary(first=2.0, last=1.5, eval=1.6),
        device="NVIDIA " + gpu, gpu_name=g.name, world_size=gpus, versions={}, estimate=est, seed=0)
    run = tmp_path / name
    run.mkdir()
    (run / "report.json").write_text(json.dumps(report.model_dump(mode="json")))
    return report


def test_compare_arithmetic(tmp_path):
    r = synthetic(tmp_path, "a", efficiency=0.2, overhead=0.1)
    c = compare_report(tmp_path / "a", r)
    assert c.gpu_hours_ratio == pytest.approx(r.estimate.efficiency / 0.2)
    base = r.estimate.peak_memory_gib - r.estimate.memory_gib["overhead"]
    assert c.memory_ratio == pytest.approx(base * 1.1 / r.estimate.peak_memory_gib)
    assert c.tokens_per_second_ratio == pytest.approx(0.2 / r.estimate.efficiency)
    assert c.mfu_ratio == pytest.approx(0.2 / r.estimate.efficiency)


def test_estimate_scaled_to_processed_tokens(tmp_path):
    r = synthetic(tmp_path, "half", efficiency=synthetic(tmp_path, "probe").estimate.efficiency)
    interrupted = r.model_copy(update={"processed_tokens": r.processed_tokens // 2, "gpu_hours": r.gpu_hours / 2})
    assert compare_report(tmp_path / "half", interrupted).gpu_hours_ratio == pytest.approx(1.0, rel=1e-6)


def test_calibration_recovers_known_efficiency_and_overhead(tmp_path):
    reports = [synthetic(tmp_path, f"r{i}", efficiency=0.42, overhead=0.07, tokens=t) for i, t in enumerate([1e7, 3e7, 9e7])]
    cal = fit_calibration([(tmp_path / f"r{i}", r) for i, r in enumerate(reports)])
    (entry,) = cal.entries
    assert (entry.gpu, entry.method, entry.runs) == ("H100-SXM", "lora", 3)
    assert entry.efficiency == pytest.approx(0.42) and entry.memory_overhead_fraction == pytest.approx(0.07)
    assert cal.leave_one_out["gpu_hours_median_abs_error"] == pytest.approx(0, abs=1e-9)
    assert cal.leave_one_out["memory_median_abs_error"] == pytest.approx(0, abs=1e-9)


def test_leave_one_out_error_by_hand(tmp_path):
    reports = [synthetic(tmp_path, f"r{i}", efficiency=e) for i, e in enumerate([0.30, 0.33, 0.36])]
    # run 0.30 predicted from median(0.33, 0.36) = 0.345: |0.30/0.345 - 1| = 0.1304; run 0.33 from 0.33: 0;
    # run 0.36 from 0.315: |0.36/0.315 - 1| = 0.1429. Median: 0.1304.
    assert leave_one_out(reports)["gpu_hours_median_abs_error"] == pytest.approx(1 - 0.30 / 0.345)


def test_calibrate_then_estimate_uses_it(tmp_path, capsys, monkeypatch):
    for i, e in enumerate([0.30, 0.32]):
        synthetic(tmp_path, f"run{i}", efficiency=e)
    config = tmp_path / "config"
    monkeypatch.setenv("RIGHTSIZE_CONFIG_DIR", str(config))
    code, out, err = run_cli(["calibrate", tmp_path / "run0", tmp_path / "run1"], capsys)
    assert code == 0, err
    assert (config / "calibration.json").is_file() and "leave-one-out" in out
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--tokens", "1e8", "--json"], capsys)
    data = json.loads(out)
    assert data["efficiency"] == pytest.approx(0.31) and "calibration" in data["efficiency_source"]
    code, out, _ = run_cli(["recommend", "--tokens", "2e9", "--gpu", "H100"], capsys)
    assert "Calibrated with" in out
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "A10G", "--tokens", "1e8", "--json"], capsys)
    assert json.loads(out)["efficiency_source"].startswith("step-time model")  # no cell for A10G: the model's


def test_compare_cli_json_and_plot(tmp_path, capsys):
    synthetic(tmp_path, "x", method="lora")
    synthetic(tmp_path, "y", method="qlora", efficiency=0.2)
    plot = tmp_path / "accuracy.png"
    code, out, err = run_cli(["compare", tmp_path / "x", tmp_path / "y", "--json", "--plot", plot], capsys)
    assert code == 0, err
    rows = json.loads(out)
    keys = {"run", "estimated_gpu_hours", "measured_gpu_hours", "gpu_hours_ratio", "estimated_peak_memory_gib",
            "measured_peak_memory_gib", "memory_ratio"}
    assert all(keys <= row.keys() for row in rows) and len(rows) == 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run_cli(["compare", tmp_path / "x", tmp_path / "y"], capsys)
    assert "median |measured/estimated - 1|" in out


def test_compare_errors(tmp_path, capsys):
    code, _, err = run_cli(["compare", tmp_path], capsys)
    assert code == 2 and "no report.json" in err
    (tmp_path / "report.json").write_text("{}")
    code, _, err = run_cli(["compare", tmp_path], capsys)
    assert code == 2 and "not a valid run report" in err
    code, _, err = run_cli(["calibrate", tmp_path], capsys)
    assert code == 2
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--calibration", tmp_path / "none.json"], capsys)
    assert code == 2 and "no such calibration file" in err


def test_multi_gpu_runs(tmp_path):
    """GPU-hours count every GPU: 8 GPUs at the same efficiency cost what one does, and calibrate recovers it."""
    one = synthetic(tmp_path, "one", efficiency=0.3)
    eight = synthetic(tmp_path, "eight", efficiency=0.3, gpus=8, model="Llama-3.1-70B", method="qlora")
    assert compare_report(tmp_path / "eight", eight).gpu_hours_ratio == pytest.approx(eight.estimate.efficiency / 0.3)
    peers = [synthetic(tmp_path, f"e{i}", efficiency=0.3, gpus=8, model="Llama-3.1-70B", method="qlora") for i in range(2)]
    cal = fit_calibration([(tmp_path / "eight", eight)] + [(tmp_path / f"e{i}", r) for i, r in enumerate(peers)])
    assert cal.entries[0].efficiency == pytest.approx(0.3)
    assert cal.leave_one_out["gpu_hours_median_abs_error"] == pytest.approx(0, abs=1e-9)
    assert one.gpu_hours == pytest.approx(compare_report(tmp_path / "one", one).measured_gpu_hours)


def _eval_json(run, base_loss=2.0, adapter_loss=1.5, base_em=0.0, adapter_em=0.4):
    from advisor.measure.runreport import EvalReport, QualityScores
    report = EvalReport(key="k", model="m", adapter_path=str(run / "adapter"), data="held-out", data_sha256="d",
                        examples=10, loss_tokens=100, generated=10, max_new_tokens=8, batch_size=8, seed=0,
                        base=QualityScores(loss=base_loss, perplexity=math.exp(base_loss), exact_match=base_em),
                        adapter=QualityScores(loss=adapter_loss, perplexity=math.exp(adapter_loss), exact_match=adapter_em),
                        seconds=1.0, device="cpu")
    (run / "eval.json").write_text(json.dumps(report.model_dump(mode="json")))


def test_compare_shows_quality_beside_cost(tmp_path, capsys):
    # issue 30: the quality delta over the base (advisor eval's eval.json) next to GPU-hours and dollars
    r = synthetic(tmp_path, "evaluated")
    synthetic(tmp_path, "plain")
    _eval_json(tmp_path / "evaluated")
    c = compare_report(tmp_path / "evaluated", r)
    assert c.quality is not None and c.quality.loss_delta == pytest.approx(-0.5)
    assert c.quality.exact_match_delta == pytest.approx(0.4)
    assert c.measured_cost_usd == pytest.approx(r.gpu_hours * get_gpu("H100-SXM").price_usd_per_hour)
    code, out, err = run_cli(["compare", tmp_path / "evaluated", tmp_path / "plain"], capsys)
    assert code == 0, err
    evaluated, plain = (next(line for line in out.splitlines() if line.startswith(name)) for name in ("evaluated", "plain"))
    assert evaluated.endswith("loss -0.5000, EM +40.0%") and f"${c.measured_cost_usd:,.2f}" in evaluated
    assert plain.endswith("no eval yet") and "over 1 evaluated run(s)" in out
    code, out, _ = run_cli(["compare", tmp_path / "evaluated", tmp_path / "plain", "--json"], capsys)
    rows = json.loads(out)
    assert rows[0]["quality"]["loss_delta"] == pytest.approx(-0.5) and rows[1]["quality"] is None
    assert rows[0]["measured_cost_usd"] == pytest.approx(c.measured_cost_usd)


def test_compare_refuses_a_damaged_eval_json(tmp_path, capsys):
    synthetic(tmp_path, "a")
    (tmp_path / "a" / "eval.json").write_text('{"format": "rightsize-eval-v1", "key": 3}')
    code, _, err = run_cli(["compare", tmp_path / "a"], capsys)
    assert code == 2 and "eval.json: not a valid eval result" in err and len(err.strip().splitlines()) == 1


def test_a_run_still_training_is_running_not_failed(tmp_path, capsys):
    """A started run without report.json is "running" while another process holds its lock, "failed" once none does."""
    import subprocess
    import sys
    from advisor.measure.compare import RUN_LOCK
    from advisor.plan.recipe import load_recipe, recipe_to_yaml
    from runners.rundir import LOCK
    from tests.helpers import RECIPES
    assert RUN_LOCK == LOCK
    run = tmp_path / "going"
    run.mkdir()
    (run / "recipe.resolved.yaml").write_text(recipe_to_yaml(load_recipe(RECIPES / "tiny-cpu-lora.yaml")))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(run / LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, out, err = run_cli(["compare", run, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)[0]["status"] == "running"
        code, out, _ = run_cli(["compare", run], capsys)
        assert "1 run(s) still training" in out
    finally:
        holder.kill()
        holder.wait()
    code, out, _ = run_cli(["compare", run, "--json"], capsys)
    assert json.loads(out)[0]["status"] == "failed"
