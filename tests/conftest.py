"""Test configuration: offline (an accidental hub download fails loudly), isolated user config, CPU only."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `advisor estimate RECIPE` measures the data's preparation in a subprocess (3-7 s each, advisor.measure.data_probe):
# off for the suite; tests/advisor/test_data_preparation.py turns it on where it tests it.
os.environ["RIGHTSIZE_DATA_PROBE"] = "0"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenized data and random-init checkpoints go to a per-session cache, never the user's."""
    os.environ["RIGHTSIZE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    """Each test sees an empty user config directory, so a developer's calibration never leaks in."""
    monkeypatch.setenv("RIGHTSIZE_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    from advisor.catalog import load as catalog
    catalog.load.cache_clear()
    yield
    catalog.load.cache_clear()


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Invoke the advisor CLI in-process; returns (exit code, stdout, stderr)."""
    from advisor.cli import main
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def meta_causal_lm(arch):
    """The transformers causal LM of a catalog architecture, built on the meta device (no memory, no download)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(**arch.hf_config_dict())
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)
