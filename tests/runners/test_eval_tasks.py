"""`advisor eval RUN --tasks`: lm-evaluation-harness tasks on the base and base + adapter of a tiny CPU run, offline —
the shipped rightsize_tiny task, eval.json's `tasks`, its cache, and bad input in one line each."""

import importlib.util
import json
import sys

import pytest

from tests.conftest import run_cli
from tests.helpers import RECIPES, train_tiny_lora

needs_harness = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="lm-evaluation-harness is not installed (pip install 'rightsize[eval]'; "
                                          "CI installs it)")
# As tests/runners/test_evaluate.py: 40 steps teach the tiny adapter to answer "6" to letter counts, so it matches
# rightsize_tiny's rows 4 and 8 (six-letter words) where the random base matches none.
STEPS = 40
LIMIT = "8"
NEW_TOKENS = "4"  # the held-out eval beside the tasks: short answers keep the module fast
ROWS = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Write the word in capital letters.", "input": "river", "output": "RIVER"},
        {"instruction": "How many letters does the word have?", "input": "tiger", "output": "5"}]


def refused(args, capsys) -> str:
    code, out, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_lora(tmp_path_factory.mktemp("eval-tasks") / "run", STEPS)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Three rows for the loss-and-answers eval that runs beside the tasks (test_evaluate.py covers that eval)."""
    path = tmp_path_factory.mktemp("held-out") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.fixture(scope="module")
def with_tasks(trained, held_out):
    from advisor.cli import main
    assert main(["eval", str(trained), "--data", str(held_out), "--tasks", "rightsize_tiny", "--limit", LIMIT,
                 "--max-new-tokens", NEW_TOKENS]) == 0
    return trained


@needs_harness
def test_tiny_task_on_base_and_adapter(with_tasks, held_out, capsys):
    code, out, err = run_cli(["eval", with_tasks, "--data", held_out, "--tasks", "rightsize_tiny", "--limit", LIMIT,
                              "--max-new-tokens", NEW_TOKENS], capsys)  # from the cache
    assert code == 0, err
    result = json.loads((with_tasks / "eval.json").read_text())
    scores = result["tasks"]["rightsize_tiny"]["exact_match"]
    assert scores["base"] == 0.0 and scores["adapter"] == pytest.approx(2 / 8)
    assert scores["delta"] == pytest.approx(scores["adapter"] - scores["base"])
    assert result["tasks_settings"]["names"] == ["rightsize_tiny"] and result["tasks_settings"]["limit"] == 8
    assert result["examples"] == 3 and result["adapter"]["loss"] is not None  # the held-out eval is there too
    assert "rightsize_tiny  exact_match  0.0000  0.2500" in out and "base + adapter" in out


@needs_harness
def test_a_second_call_reuses_the_tasks_and_a_new_limit_runs_only_them(with_tasks, held_out, capsys):
    args = ["eval", with_tasks, "--data", held_out, "--tasks", "rightsize_tiny", "--max-new-tokens", NEW_TOKENS, "--json"]
    before = (with_tasks / "eval.json").stat().st_mtime_ns
    code, out, err = run_cli(args + ["--limit", LIMIT], capsys)
    assert code == 0, err
    assert json.loads(out)["cached"] is True and (with_tasks / "eval.json").stat().st_mtime_ns == before
    assert "loading" not in err  # nothing was loaded
    held_out = json.loads((with_tasks / "eval.json").read_text())["seconds"]
    code, out, err = run_cli(args + ["--limit", "4"], capsys)
    assert code == 0, err
    again = json.loads(out)
    assert again["cached"] is False and again["tasks_settings"]["limit"] == 4 and "lm-eval: rightsize_tiny" in err
    assert "loss on" not in err and again["seconds"] == held_out  # the held-out eval came from the cache
    assert json.loads((with_tasks / "eval.json").read_text())["tasks_settings"]["limit"] == 4


@needs_harness
def test_a_task_lm_eval_does_not_know_is_one_line(trained, capsys):
    err = refused(["eval", trained, "--tasks", "rightsize_tiyn"], capsys)
    assert "--tasks rightsize_tiyn: no such lm-eval task" in err and "rightsize_tiny" in err  # the close match


@needs_harness
def test_a_task_whose_dataset_is_not_cached_is_one_line(trained, tmp_path, capsys):
    (tmp_path / "needs_hub.yaml").write_text(
        "task: needs_hub\ndataset_path: rightsize-test/not-cached\noutput_type: generate_until\ntest_split: test\n"
        "doc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    err = refused(["eval", trained, "--tasks", "needs_hub", "--tasks-dir", tmp_path], capsys)
    assert "--tasks needs_hub: dataset rightsize-test/not-cached is not in the local datasets cache" in err


def test_without_lm_eval_tasks_are_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError, as when not installed
    err = refused(["eval", "--recipe", RECIPES / "tiny-cpu-lora.yaml", "--tasks", "rightsize_tiny"], capsys)
    assert "--tasks needs lm-evaluation-harness: pip install 'rightsize[eval]'" in err


def test_task_flags_need_tasks(capsys):
    assert "--limit applies with --tasks" in refused(["eval", "--recipe", RECIPES / "tiny-cpu-lora.yaml",
                                                      "--limit", "3"], capsys)
    assert "--tasks-dir applies with --tasks" in refused(["eval", "--recipe", RECIPES / "tiny-cpu-lora.yaml",
                                                          "--tasks-dir", "."], capsys)
