"""Every shipped recipe validates; recipe errors name the field and the fix; misspelled keys are rejected."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from advisor.core.errors import AdvisorError
from advisor.plan.estimate import estimate_recipe
from advisor.plan.recipe import Recipe, load_recipe, recipe_to_yaml
from tests.conftest import run_cli
from tests.helpers import RECIPES

ALL_RECIPES = sorted(RECIPES.rglob("*.yaml"))  # recursive: recipes in subfolders are checked too


def test_recipes_found():
    assert len(ALL_RECIPES) >= 7


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_validates_and_estimates(path, capsys):
    recipe = load_recipe(path)
    assert Path(recipe.data.path).exists()
    estimate = estimate_recipe(recipe)
    assert estimate.trainable_params > 0 and estimate.peak_memory_gib > 0
    if recipe.launch.gpu:
        assert estimate.fits, f"{path.name} does not fit the GPU it says it was sized for"
    code, out, err = run_cli(["validate", path], capsys)
    assert code == 0 and out.startswith("ok:"), err
    # the resolved form round-trips
    assert Recipe.model_validate(__import__("yaml").safe_load(recipe_to_yaml(recipe))) == recipe


def _write(tmp_path, text: str) -> Path:
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


BASE = "name: t\nmodel: {name: meta-llama/Llama-3.1-8B}\ndata: {path: d.jsonl}\n"


@pytest.mark.parametrize("extra, needle", [
    ("lora: {rank: 8}\n", "unknown key lora.rank; did you mean lora.r?"),
    ("train: {learning_rate: 1e-4}\n", "unknown key train.learning_rate"),
    ("trian: {lr: 1e-4}\n", "did you mean train?"),
    ("train: {micro_bach: 2}\n", "did you mean train.micro_batch?"),
    ("lora: {r: 0}\n", "lora.r: Input should be greater than 0"),
    ("lora: {targets: [q_proj, lm_head]}\n", "unknown LoRA target"),
    ("train: {lr: -1}\n", "train.lr"),
    ("train: {optimizer: sgd}\n", "train.optimizer"),
    ("data2: {}\n", "unknown key data2"),
    ("quant: {quant_type: int3}\n", "quant.quant_type"),
    ("launch: {strategy: fsdp}\ntrain: {optimizer: adamw-8bit}\n", "use\ntrain.optimizer: adamw".split("\n")[0]),
])
def test_recipe_errors_name_field_and_fix(tmp_path, extra, needle):
    with pytest.raises(AdvisorError) as err:
        load_recipe(_write(tmp_path, BASE + extra))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("", "empty file"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: [unclosed\n", "invalid YAML"),
    ("name: a\nname: b\n", "duplicate key"),
    ("name: !!python/object/apply:os.system ['echo owned']\n", "invalid YAML"),
    ("model: {}\n", "missing required key name"),
    ("name: t\nmodel: {name: x, arch: {hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, "
     "num_attention_heads: 1, vocab_size: 8}}\ndata: {path: d.jsonl}\n", "exactly one of model.name"),
])
def test_bad_files(tmp_path, text, needle):
    with pytest.raises(AdvisorError, match=None) as err:
        load_recipe(_write(tmp_path, text))
    assert needle in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AdvisorError, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(AdvisorError, match="is a directory"):
        load_recipe(tmp_path)


def test_overrides(tmp_path):
    recipe = load_recipe(_write(tmp_path, BASE), ["train.lr=1e-4", "lora.targets=[q_proj, v_proj]", "quant={}"])
    assert recipe.train.lr == 1e-4 and recipe.lora.target_modules == ("q_proj", "v_proj") and recipe.method == "qlora"
    with pytest.raises(AdvisorError, match="key.path=value"):
        load_recipe(_write(tmp_path, BASE), ["train.lr"])
    with pytest.raises(AdvisorError, match="unknown key train.lrr"):
        load_recipe(_write(tmp_path, BASE), ["train.lrr=1"])


def test_relative_data_path_resolves_against_recipe(tmp_path):
    recipe = load_recipe(_write(tmp_path, BASE))
    assert Path(recipe.data.path) == (tmp_path / "d.jsonl").resolve()


def test_validate_cli_errors(tmp_path, capsys):
    code, _, err = run_cli(["validate", _write(tmp_path, BASE + "lora: {rank: 8}\n")], capsys)
    assert code == 2 and "did you mean lora.r?" in err and len(err.strip().splitlines()) == 1
    path = _write(tmp_path, BASE)
    (tmp_path / "d.jsonl").unlink()
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2 and "does not exist" in err


SECTIONS = {"model": ["name", "arch", "dtype", "tokenizer"], "lora": ["r", "alpha", "dropout", "targets"],
            "train": ["lr", "epochs", "max_steps", "micro_batch", "seed"], "data": ["seq_len", "format", "packing"]}
junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=10), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(sorted(SECTIONS)), data=st.data(), value=junk)
def test_property_bad_values_are_one_line(tmp_path, section, data, value):
    key = data.draw(st.sampled_from(SECTIONS[section]))
    import yaml
    raw = {"name": "t", "model": {"name": "meta-llama/Llama-3.1-8B"}, "data": {"path": "d.jsonl"}}
    raw.setdefault(section, {})
    if section == "model" and key == "arch":
        raw["model"] = {"arch": value}
    else:
        raw[section][key] = value
    path = _write(tmp_path, yaml.safe_dump(raw))
    try:
        load_recipe(path)
    except AdvisorError as exc:
        assert "\n" not in str(exc) and str(exc)


def test_every_bad_key_reported_at_once_with_other_tools_keys_mapped(tmp_path):
    """axolotl's top-level keys point at ours; every problem is in the one line."""
    text = ("name: t\nbase_model: meta-llama/Llama-3.1-8B\nmicro_batch_size: 2\nsequence_len: 512\nlr: 1e-4\n"
            "data: {path: d.jsonl}\ntrain: {bogus: 1, lr: 3}\n")
    with pytest.raises(AdvisorError) as err:
        load_recipe(_write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message and "problems:" in message
    for needle in ("unknown key base_model; did you mean model.name?",
                   "unknown key micro_batch_size; did you mean train.micro_batch?",
                   "unknown key sequence_len; did you mean data.seq_len?", "unknown key lr; did you mean train.lr?",
                   "unknown key train.bogus", "train.lr: Input should be less than 1", "missing required key model"):
        assert needle in message, needle
    assert message.index("unknown key") < message.index("missing required key")


ARCH = "name: t\nmodel: {arch: {model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, " \
       "num_attention_heads: 4, vocab_size: 256%s}}\ndata: {path: d.jsonl}\n"


@pytest.mark.parametrize("extra, needle", [
    (", hiden_size: 8", "unknown key model.arch.hiden_size; did you mean model.arch.hidden_size?"),
    (", model_type: bert", "model.arch: model_type 'bert' is not supported"),
    (", num_key_value_heads: 0", "model.arch.num_key_value_heads: Expected `int` >= 1"),
])
def test_inline_arch_errors_name_the_field(tmp_path, extra, needle):
    """The inline architecture is a msgspec Struct inside the pydantic recipe, read by msgspec (advisor.core.convert):
    its unknown keys get the same hint and its checks name their field."""
    text = ARCH % extra if "model_type" not in extra else (ARCH % "").replace("model_type: llama", extra[2:])
    with pytest.raises(AdvisorError) as err:
        load_recipe(_write(tmp_path, text))
    assert needle in str(err.value) and "\n" not in str(err.value)
