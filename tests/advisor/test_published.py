"""The estimator against published GPU measurements (bench/published/rows.yaml): the data, the fit behind the shipped
constants, the step-time terms, the GPU catalog as devices report it, and calibration from the rows."""

import json
import statistics

import pytest
from msgspec.structs import replace

from advisor.catalog import load as catalog
from advisor.formulas.memory import DEFAULT_OVERHEAD_FRACTION, memory_per_gpu
from advisor.measure.published import ROWS_FILE, abs_errors, estimate_rows, load_rows, row_case
from advisor.measure.published_fit import fit_constants, fit_overhead_fraction, fit_published, fit_rows, overhead_rows
from advisor.plan.launch_plan import gpus_needed
from advisor.formulas.step_time import (
    DEFAULT_STEP_TIME, causal_attention_flops_per_token, matmul_fraction, step_seconds, step_work,
)
from advisor.formulas.setup import TrainingSetup
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def cases():
    return [row_case(r) for r in load_rows(ROWS_FILE)]


def test_rows_are_sourced_measurements_without_the_held_out_sets(cases):
    assert len(cases) >= 40
    for c in cases:
        assert c.row.source and c.row.quote
        assert "litgpt" not in c.row.source.lower() and "method_comparison" not in c.row.source
    flagged = [c for c in cases if c.row.implausible]
    assert flagged and all(c.memory_reason and c.throughput_reason for c in flagged)  # shown, never in a statistic


def test_shipped_constants_are_the_fit(cases):
    rows = fit_rows(cases)
    refit = fit_constants(rows)
    for name in ("matmul_fraction_max", "matmul_half_tokens", "eager_traffic_factor"):
        assert getattr(refit, name) == pytest.approx(getattr(DEFAULT_STEP_TIME, name), rel=0.02), name
    assert refit.step_fixed_s == pytest.approx(DEFAULT_STEP_TIME.step_fixed_s, abs=0.01)
    assert fit_overhead_fraction(overhead_rows(cases)) == pytest.approx(DEFAULT_OVERHEAD_FRACTION, abs=0.01)


def test_errors_on_expressible_rows_with_leave_one_out(cases):
    """Median throughput error within 12% and median memory error within 10%, in-sample and leave-one-out, over at
    least 90 and 75 rows. (With the 41 rows before the fms-acceleration A100 rows, memory was within 4%; those 37 rows,
    HF Trainer peaks and nvidia-smi totals, took it to 7.9% in-sample and 9.8% leave-one-out: the issue's 6% target is
    not met, docs/accuracy.md lists the rows missed.)"""
    rows = estimate_rows(cases)
    fit = fit_published(cases)
    tput = abs_errors(r.throughput_ratio for r in rows if r.case.throughput_reason is None)
    mem = abs_errors(r.memory_ratio for r in rows if r.case.memory_reason is None)
    assert len(tput) >= 90 and len(mem) >= 75
    assert statistics.median(tput) <= 0.12 and statistics.median(abs_errors(fit.throughput_loo.values())) <= 0.12
    assert statistics.median(mem) <= 0.10 and statistics.median(abs_errors(fit.memory_loo.values())) <= 0.10


def test_gpu_counts_with_device_reported_memory():
    h100, h200 = catalog.get_gpu("H100"), catalog.get_gpu("H200")
    assert gpus_needed(TrainingSetup(arch=catalog.get_model("Llama-3.1-70B"), method="full"), h100) == 16
    assert gpus_needed(TrainingSetup(arch=catalog.get_model("Llama-3.1-8B"), method="full", seq_len=4096), h200) == 1


def test_catalog_memory_is_what_devices_report():
    gpus = {g.name: g for g in catalog.entries("gpus")}
    for name in ("B200", "MI300X", "H100-NVL", "RTX-5090", "RTX-6000-Ada", "RTX-A6000", "RTX-3090", "L40"):
        assert name in gpus
    assert gpus["H100-SXM"].memory_gib == pytest.approx(85045477376 / 2**30, abs=0.01)  # deviceQuery's bytes
    for g in gpus.values():
        assert g.memory_source and g.usable_memory_gib < g.memory_gib and g.generation
        # a link rate no primary source confirmed is left out (the host link stands in) and said so
        assert g.interconnect_gbs or "interconnect" in g.uncertain
        assert all(p.source and p.date for p in g.prices)
        if not g.memory_reported:  # no device-reported figure was found: said so, not passed off as one
            assert "memory" in g.uncertain
        elif g.memory_nvidia_smi_mib:  # torch's total sits below nvidia-smi's
            assert g.memory_gib < g.memory_nvidia_smi_mib / 1024
        assert g.price_usd_per_hour is None or g.price_source


def test_step_time_terms():
    arch = catalog.get_model("Llama-3.1-8B")
    assert matmul_fraction(8192, DEFAULT_STEP_TIME) > matmul_fraction(512, DEFAULT_STEP_TIME)
    # causal: half of PaLM's 4 L T d forward attention, backward 2.5x, checkpointing one more forward
    d = arch.num_attention_heads * arch.head_dim_resolved
    assert causal_attention_flops_per_token(arch, 2048, False) == pytest.approx(2 * 32 * 2048 * d * 3.5)
    setup = TrainingSetup(arch=arch, method="lora", micro_batch=2)
    h100 = catalog.get_gpu("H100")
    eager, fused = (step_seconds(step_work(setup, "none"), h100, f) for f in (False, True))
    assert fused.total_s < eager.total_s and fused.matmul_s == eager.matmul_s
    # FSDP over a slow link: the gathers outlast the compute and are exposed
    fsdp = replace(setup, gpus=2, sharding="fsdp", micro_batch=1, seq_len=256)
    slow = replace(catalog.get_gpu("RTX-4090"), interconnect_gbs=1.0)
    assert step_seconds(step_work(fsdp, "fsdp"), slow).communication_s > 0
    full = replace(setup, method="full")
    assert step_work(replace(full, precision="bf16-pure"), "none").step_bytes < step_work(full, "none").step_bytes


def test_new_memory_terms():
    arch = catalog.get_model("Llama-3.1-8B")
    full = TrainingSetup(arch=arch, method="full")
    assert memory_per_gpu(replace(full, precision="bf16-pure")).optimizer == pytest.approx(
        memory_per_gpu(full).optimizer / 3, rel=0.01)  # bf16 moments (4 B) against master + fp32 moments (12 B)
    lora = TrainingSetup(arch=arch, method="lora")
    assert memory_per_gpu(replace(lora, adapter_dtype="bfloat16")).adapters == pytest.approx(
        memory_per_gpu(lora).adapters / 2)
    qlora = TrainingSetup(arch=arch, method="qlora", gradient_checkpointing=False)
    assert memory_per_gpu(replace(qlora, qlora_embeddings_dtype="float32")).total > memory_per_gpu(qlora).total
    offloaded = memory_per_gpu(replace(lora, gradient_checkpointing=False, activation_offloading=True))
    assert offloaded.activations < memory_per_gpu(replace(lora, gradient_checkpointing=False)).activations / 5
    sharded = TrainingSetup(arch=catalog.get_model("Llama-3.1-70B"), method="qlora", gpus=2, sharding="fsdp")
    on_gpu, on_cpu = memory_per_gpu(sharded), memory_per_gpu(replace(sharded, cpu_offload=True))
    # CPU offload moves the shards; bitsandbytes' quantisation constants stay (unsharded_quant_constant_bytes)
    assert on_gpu.buffers > 0 and 0 < on_cpu.weights < on_gpu.weights / 10 and on_cpu.buffers == on_gpu.buffers
    lora70 = memory_per_gpu(replace(sharded, method="lora", cpu_offload=True))
    assert lora70.weights == 0
    padded = replace(lora, seq_len=2048, mean_seq_len=512)
    assert padded.tokens_per_micro_batch == 512 and memory_per_gpu(padded).total == memory_per_gpu(lora).total


def test_calibrate_from_published_rows_then_estimate(tmp_path, capsys):
    out = tmp_path / "cal.json"
    code, text, err = run_cli(["calibrate", str(ROWS_FILE), "--out", str(out)], capsys)
    assert code == 0, err
    assert "leave-one-out" in text and "published rows" in text
    cal = json.loads(out.read_text())
    assert cal["step_time"]["matmul_fraction_max"] == pytest.approx(DEFAULT_STEP_TIME.matmul_fraction_max, rel=0.02)
    assert cal["memory_overhead_fraction"] == pytest.approx(DEFAULT_OVERHEAD_FRACTION, abs=0.01)
    code, text, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--tokens", "1e8",
                             "--calibration", str(out), "--json"], capsys)
    data = json.loads(text)
    assert code == 0 and f"calibration {out}" in data["efficiency_source"] and data["tokens_per_second_per_gpu"] > 0
