"""Launch refuses early: the fit verdict before any tokenizer, data or weights load; CPU multi-rank only when the
recipe asks for CPU ranks; progress a person can read."""

import pytest

from advisor.plan.recipe import load_recipe
from runners.launch import check_process_count
from runners.progress import LogProgress, human_duration, step_fields
from tests.conftest import run_cli
from tests.helpers import RECIPES


def _no_load(monkeypatch):
    """Any load after this fails the test: the refusal must come first."""
    import runners.launch
    import runners.session

    def forbidden(*args, **kwargs):
        raise AssertionError("loaded something before the fit verdict")
    for name in ("load_tokenizer", "build_dataset", "load_model"):
        monkeypatch.setattr(runners.session, name, forbidden)
    monkeypatch.setattr(runners.session.RunFolder, "open", forbidden)
    monkeypatch.setattr(runners.launch, "_run_forwarding_signals", forbidden)


def test_fit_refused_before_any_load(tmp_path, monkeypatch, capsys):
    _no_load(monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", RECIPES / "llama3.1-8b-lora.yaml", "--gpu", "T4", "--out", out], capsys)
    assert code == 2 and "exceeds the T4's" in err and "would fit:" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_fit_refused_before_torchrun_starts(tmp_path, monkeypatch, capsys):
    _no_load(monkeypatch)
    code, _, err = run_cli(["run", RECIPES / "llama3.1-8b-lora.yaml", "--gpu", "T4", "--nproc-per-node", "2",
                            "--set", "launch.backend=gloo", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "exceeds the T4's" in err and len(err.strip().splitlines()) == 1


def test_cpu_multi_rank_without_cpu_backend_refused_in_one_line(tmp_path, monkeypatch, capsys):
    import runners.launch
    monkeypatch.setattr(runners.launch, "visible_gpus", lambda: 0)
    _no_load(monkeypatch)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", RECIPES / "llama3.1-8b-lora.yaml", "--nproc-per-node", "8", "--out", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "launch.nproc_per_node 8 needs 8 GPUs but this machine has no CUDA GPU" in err and "launch.backend: gloo" in err
    assert not out.exists()


def test_process_count_policy():
    recipe = load_recipe(RECIPES / "llama3.1-8b-lora.yaml", ["launch.nproc_per_node=8"])
    check_process_count(recipe, 8)  # one process per GPU
    with pytest.raises(Exception, match="has 4 visible GPU"):
        check_process_count(recipe, 4)
    check_process_count(load_recipe(RECIPES / "tiny-cpu-lora.yaml", ["launch.nproc_per_node=2"]), 0)  # gloo asked for


def test_human_eta_and_progress_fields(capsys):
    assert [human_duration(s) for s in (0, 45, 185, 7620, 3 * 86400 + 4 * 3600)] == ["0s", "45s", "3m 05s", "2h 07m", "3d 04h"]
    assert human_duration(float("inf")) == "unknown"
    progress = LogProgress(total=2, initial=0, enabled=True)
    progress.set_postfix(**step_fields(1.23456, 2e-4, 1234.5, None))
    progress.update(1)
    progress.set_postfix(**step_fields(1.1, 1e-4, 1000, 1.05))
    progress.update(1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("train: step 1/2 loss 1.2346 lr 2.00e-04 tok/s 1,234") and "eval" not in lines[0]
    assert "eval 1.0500" in lines[1] and lines[1].endswith("eta 0s")
