"""The benchmarks still run (on a tiny model, on the CPU), so they cannot rot between GPU sessions."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"gpu", "lora_speedup", "qlora_speedup", "lora_mfu", "qlora_mfu"} <= result.keys()
    for run in ("lora_ours", "lora_baseline", "qlora_ours", "qlora_baseline"):
        assert result[run]["tokens_per_second"] > 0 and result[run]["peak_memory_gib"] > 0
    assert 0 < result["lora_mfu"] < 1 and result["lora_speedup"] > 0
    assert "speed-up" in proc.stdout


def test_advisor_latency_benchmark_smoke(tmp_path):
    out = tmp_path / "latency.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "advisor_latency.py"), "--runs", "2", "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    result = json.loads(out.read_text())
    assert result["recommend_seconds"] > 0 and result["heavy_modules_imported"] == []
