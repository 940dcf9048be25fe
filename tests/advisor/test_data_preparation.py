"""`advisor estimate RECIPE` knows its data: the preparation time measured on a sample with the recipe's tokenizer
(runners.data_probe), the packed cache's size, and "not measured: why" when it cannot measure."""

import json

import pytest

from advisor.formulas.data import packed_cache_bytes, preparation_seconds
from advisor.measure.data_probe import NO_RUNNER, PROBE_ENV, probe_data, read_probe
from advisor.plan.estimate import DataProbe, DataSourceSize, data_preparation, preparation_processes
from advisor.plan.recipe import load_recipe
from tests.conftest import run_cli

MODEL = ("{arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
         "num_key_value_heads: 2, vocab_size: 259}%s}")


def _recipe(tmp_path, rows: int, tokenizer: str = "", extra: str = ""):
    """A recipe on an inline model with the byte tokenizer (or `tokenizer`), on `rows` instruction rows."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Repeat {i}.", "input": "", "output": f"answer {i} " * 3})
                            + "\n" for i in range(rows)))
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nmodel: {MODEL % tokenizer}\n"
                    f"data: {{path: train.jsonl, format: instruction, seq_len: 256, val_fraction: 0.0{extra}}}\n")
    return path


def _probe(**fields) -> DataProbe:
    from msgspec.structs import replace
    base = DataProbe(tokens_per_second_per_process=1e6, sample_rows=100, sample_examples=100, sample_tokens=10_000,
                     sample_packed_rows=50, sample_bytes=20_000, tokens_per_byte=0.5, file="/d/train.jsonl",
                     tokenizer="byte",
                     sources=[DataSourceSize(key="data.path", path="/d/train.jsonl", bytes=2_000_000, weight=1.0)])
    return replace(base, **fields)


# --- formulas and the plan: exact arithmetic ---------------------------------------------------------------------

def test_packed_cache_bytes_is_12_per_token_and_8_per_offset():
    assert packed_cache_bytes(1000, 10) == 12 * 1000 + 8 * 11


def test_preparation_seconds_one_process_and_several():
    assert preparation_seconds(1e6, 5e5, 1) == pytest.approx(2.0)
    assert preparation_seconds(1e6, 5e5, 4) == pytest.approx(0.5)  # no serial rate, full efficiency: scales
    # 2 us per token of work over 2 processes at 80%: 1.25 us per token, plus 2 s to start them
    assert preparation_seconds(1e6, 5e5, 2, start_seconds=2.0, parallel_efficiency=0.8) == pytest.approx(3.25)
    # the main process's share (0.5 us per token) bounds it once the work is spread thin
    assert preparation_seconds(1e6, 5e5, 16, serial_tokens_per_second=2e6) == pytest.approx(0.5)


def test_preparation_processes_follow_the_runner():
    assert preparation_processes(19_999, cores=8) == 1
    assert preparation_processes(20_000, cores=8) == 8
    assert preparation_processes(1e6) >= 1


def test_data_preparation_scales_the_file_by_measured_tokens_per_byte(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, 3))
    prep = data_preparation(recipe, _probe(), processes=1)
    assert prep.tokens == 2_000_000 * 0.5
    assert prep.cache_bytes == packed_cache_bytes(1e6, 1e6 * 50 / 10_000)
    assert prep.seconds == pytest.approx(1.0)
    assert "1M tokens/s per core measured on 100 rows of train.jsonl with the byte tokenizer" in prep.source
    assert "0.5 tokens per byte measured on its first 100 rows (20,000 bytes)" in str(prep.tokens_source)
    assert "whatever --tokens, train.max_steps or epochs" in str(prep.tokens_source)


def test_data_preparation_caps_at_max_examples_and_says_not_measured(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, 3, extra=", max_examples: 10"))
    assert data_preparation(recipe, _probe(), processes=1).tokens == 10 * 10_000 / 100
    unmeasured = data_preparation(recipe, "not measured (--no-data-probe)")
    assert unmeasured.source == "not measured (--no-data-probe)" and unmeasured.seconds is None
    assert data_preparation(recipe, "boom").source == "not measured: boom"


def test_read_probe_answers_and_failures():
    assert read_probe('{"error": "tokenizer x is not loadable offline"}\n') == \
        "not measured: tokenizer x is not loadable offline"
    assert str(read_probe("", "Killed")).startswith("not measured: the probe failed (Killed)")
    assert str(read_probe('{"tokens_per_second_per_process": "x"}')).startswith("not measured: the probe's answer")


def test_without_the_runner_stack_it_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert probe_data(tmp_path / "r.yaml") == NO_RUNNER


# --- the probe end to end: the byte tokenizer on a small file ------------------------------------------------------

def test_the_probe_measures_with_the_runner_path_and_caches(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from runners.examples import clip_example, render_batch
    from runners.tokenizer import byte_tokenizer, max_text_chars
    from runners.data_probe import SAMPLE_ROWS
    monkeypatch.setenv("RIGHTSIZE_CACHE_DIR", str(tmp_path / "cache"))
    path = _recipe(tmp_path, SAMPLE_ROWS + 100)
    probe = probe_data(path)
    assert isinstance(probe, DataProbe), probe
    assert probe.sample_rows == SAMPLE_ROWS and not probe.whole_file and not probe.cached
    lines = (tmp_path / "train.jsonl").read_bytes().splitlines(keepends=True)
    assert probe.sample_bytes == sum(len(line) for line in lines[:SAMPLE_ROWS])
    # the tokens are what the runner renders and the Packer keeps (seq_len 256)
    recipe, tok = load_recipe(path), byte_tokenizer()
    examples = [clip_example(json.loads(line), recipe.data, max_text_chars(tok, 256)) for line in lines[:SAMPLE_ROWS]]
    rendered = render_batch({k: [e[k] for e in examples] for k in examples[0]}, recipe.data, tok)
    assert probe.sample_tokens == sum(min(len(ids), 256) for ids, _ in rendered)
    assert probe.sample_bytes and probe.tokens_per_byte == pytest.approx(probe.sample_tokens / probe.sample_bytes)
    assert probe.tokens_per_second_per_process > 0 and probe.tokenizer == "byte"
    assert [s.bytes for s in probe.sources] == [(tmp_path / "train.jsonl").stat().st_size]
    cached = list((tmp_path / "cache" / "tokenized" / "probes").glob("*.json"))
    assert len(cached) == 1
    again = probe_data(path)
    assert isinstance(again, DataProbe) and again.cached
    assert again.tokens_per_second_per_process == probe.tokens_per_second_per_process
    assert list((tmp_path / "cache" / "tokenized" / "probes").glob("*.json")) == cached
    with (tmp_path / "train.jsonl").open("a") as f:  # a changed file is measured again
        f.write(json.dumps({"instruction": "x", "input": "", "output": "y"}) + "\n")
    changed = probe_data(path)
    assert isinstance(changed, DataProbe) and not changed.cached


def test_estimate_reports_the_preparation_and_its_json_keys(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.delenv(PROBE_ENV)
    monkeypatch.setenv("RIGHTSIZE_CACHE_DIR", str(tmp_path / "cache"))
    path = _recipe(tmp_path, 50)
    code, out, _ = run_cli(["estimate", path, "--gpu", "A10G", "--tokens", "1e9"], capsys)
    assert code == 0, out
    assert "Data preparation: ~" in out and "tokens/s per core measured on 50 rows of train.jsonl" in out
    assert "packed cache" in out and "measured on the whole file" in out
    code, out, _ = run_cli(["estimate", path, "--gpu", "A10G", "--json"], capsys)
    result = json.loads(out)
    assert result["data_tokens"] > 0 and result["data_preparation_seconds"] > 0
    assert result["data_cache_bytes"] == pytest.approx(packed_cache_bytes(result["data_tokens"], 50), rel=0.01)
    assert result["data_preparation_processes"] == 1 and "1 process (one: under 20,000 rows)" in \
        result["data_preparation_source"]


def test_a_missing_tokenizer_is_not_measured_and_the_estimate_goes_on(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.delenv(PROBE_ENV)
    monkeypatch.setenv("RIGHTSIZE_CACHE_DIR", str(tmp_path / "cache"))
    path = _recipe(tmp_path, 5, tokenizer=", tokenizer: ./no-such-tokenizer")
    code, out, err = run_cli(["estimate", path, "--gpu", "A10G"], capsys)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("Data preparation:"))
    assert line.startswith("Data preparation: not measured: tokenizer") and "no-such-tokenizer" in line, line
    assert "Traceback" not in out + err


def test_no_data_probe_and_the_environment_skip_it(tmp_path, monkeypatch, capsys):
    path = _recipe(tmp_path, 5)
    code, out, _ = run_cli(["estimate", path, "--gpu", "A10G"], capsys)  # the suite sets RIGHTSIZE_DATA_PROBE=0
    assert code == 0 and "Data preparation: not measured (RIGHTSIZE_DATA_PROBE=0)" in out
    monkeypatch.delenv(PROBE_ENV)
    code, out, _ = run_cli(["estimate", path, "--gpu", "A10G", "--no-data-probe", "--json"], capsys)
    result = json.loads(out)
    assert result["data_preparation_source"] == "not measured (--no-data-probe)"
    for key in ("data_tokens", "data_tokens_source", "data_cache_bytes", "data_preparation_seconds",
                "data_preparation_processes"):
        assert key in result and result[key] is None
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "A10G", "--json"], capsys)
    assert json.loads(out)["data_preparation_source"] is None  # no recipe: no data, unchanged
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "A10G", "--no-data-probe"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--no-data-probe" in err, err
