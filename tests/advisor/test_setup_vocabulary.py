"""One setup vocabulary and one plan: every recipe key reaches the estimate or is documented as not doing so, every
`advisor estimate` setup flag is honoured with a recipe (or refused in one line), and the sharding and checkpointing
choices are made in one place."""

import ast
import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from advisor.catalog import load as catalog
from advisor.cli.setup_flags import setup_flags
from advisor.formulas.setup import TrainingSetup
from advisor.plan.estimate import estimate_recipe
from advisor.plan.launch_plan import plan_launch
from advisor.plan.recipe import Recipe, load_recipe
from advisor.plan.recipe_setup import IN_ESTIMATE, NOT_IN_ESTIMATE
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "recipes" / "llama3.1-8b-lora.yaml"
QLORA = ROOT / "recipes" / "llama3.1-8b-qlora.yaml"


def _section_model(annotation):
    """The pydantic section a field holds (through Optional and tuples), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (inner := _section_model(arg)) is not None:
            return inner
    return None


def recipe_keys(model=Recipe, prefix="") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = prefix + name
        keys.append(key)
        section = _section_model(field.annotation)
        if section is not None:
            keys += recipe_keys(section, key + ".")
    return keys


def test_every_recipe_key_reaches_the_estimate_or_says_why_not():
    keys = recipe_keys()
    assert not set(IN_ESTIMATE) & set(NOT_IN_ESTIMATE)
    missing = [k for k in keys if k not in IN_ESTIMATE and k not in NOT_IN_ESTIMATE]
    assert missing == [], f"recipe keys neither in IN_ESTIMATE nor NOT_IN_ESTIMATE: {missing}"
    stale = [k for k in list(IN_ESTIMATE) + list(NOT_IN_ESTIMATE) if k not in keys]
    assert stale == [], f"documented keys the recipe no longer has: {stale}"


def _estimate(recipe: Path, sets: list[str], tokens: float | None = 1e9, **kwargs) -> dict:
    from advisor.core.convert import to_json
    return to_json(estimate_recipe(load_recipe(recipe, sets), "H100", tokens=tokens, **kwargs))


# One change per key in IN_ESTIMATE (the recipe it applies to, the --set overrides, extra overrides that set the
# context it acts in). Keys that only name things (the recipe's name, the model, the GPU) are checked by name.
CHANGES = {
    "model.attn_implementation": (LORA, ["model.attn_implementation=eager"], []),
    "lora.r": (LORA, ["lora.r=64"], []),
    "lora.dropout": (LORA, ["lora.dropout=0"], []),
    "lora.targets": (LORA, ["lora.targets=[q_proj,v_proj]"], []),
    "lora.use_dora": (LORA, ["lora.use_dora=true"], []),
    "lora.modules_to_save": (LORA, ["lora.modules_to_save=[lm_head]"], []),
    "lora.dtype": (LORA, ["lora.dtype=bfloat16"], []),
    "quant": (LORA, ["quant={}"], []),
    "quant.double_quant": (QLORA, ["quant.double_quant=false"], []),
    "quant.unquantized_dtype": (QLORA, ["quant.unquantized_dtype=float32"], []),
    "data.seq_len": (LORA, ["data.seq_len=4096"], []),
    "train.micro_batch": (LORA, ["train.micro_batch=1"], []),
    "train.grad_accum": (LORA, ["train.grad_accum=1"], []),
    "train.gradient_checkpointing": (LORA, ["train.gradient_checkpointing=false"], []),
    "train.fused_loss": (LORA, ["train.fused_loss=false"], []),
    "train.activation_offloading": (LORA, ["train.activation_offloading=true", "train.gradient_checkpointing=true"], []),
    "train.compile": (LORA, ["train.compile=true"], []),
    "train.optimizer": (LORA, ["train.optimizer=adamw-8bit"], []),
    "launch.nproc_per_node": (LORA, ["launch.nproc_per_node=8"], []),
    "launch.nnodes": (LORA, ["launch.nnodes=2"], []),
    "launch.strategy": (LORA, ["launch.strategy=fsdp"], ["launch.nproc_per_node=8"]),
    "launch.cpu_offload": (LORA, ["launch.cpu_offload=true"], ["launch.nproc_per_node=8", "launch.strategy=fsdp"]),
    "launch.internode_gbps": (LORA, ["launch.internode_gbps=25"],
                              ["launch.nproc_per_node=8", "launch.nnodes=2", "launch.strategy=fsdp"]),
}
TOKEN_KEYS = {"data.path", "data.weight", "data.mix", "data.val_fraction", "train.epochs", "train.max_steps"}
NAMING_KEYS = {"name", "model.name", "model.arch", "launch.gpu"}


def test_the_table_of_changes_covers_every_key_in_the_estimate():
    assert set(IN_ESTIMATE) == set(CHANGES) | TOKEN_KEYS | NAMING_KEYS


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_each_recipe_key_changes_the_estimate(key):
    recipe, change, context = CHANGES[key]
    assert _estimate(recipe, context + change) != _estimate(recipe, context), key


@pytest.mark.parametrize("sets", [["data.val_fraction=0.5"], ["train.epochs=2"], ["train.max_steps=10"],
                                  ["data.weight=2"]])
def test_token_keys_change_the_token_count(sets):
    assert _estimate(LORA, sets, tokens=None)["tokens"] != _estimate(LORA, [], tokens=None)["tokens"]


def test_data_mix_adds_its_weighted_size(tmp_path):
    data = (ROOT / "recipes" / "data" / "tiny-instructions.jsonl")
    extra = tmp_path / "extra.jsonl"
    extra.write_text(data.read_text())
    base = _estimate(LORA, [], tokens=None)["tokens"]
    mixed = _estimate(LORA, [f"data.mix=[{{path: {extra}, weight: 0.5}}]"], tokens=None)["tokens"]
    assert mixed == pytest.approx(base * 1.5)


# Flag -> extra flags that make it act on the LoRA recipe (each flag's own effect is then compared against the same
# context without it).
FLAG_CONTEXT = {
    "--precision": ["--method", "full"], "--qlora-embeddings-dtype": ["--method", "qlora"],
    "--double-quant": ["--method", "qlora"], "--sharding": ["--gpus", "8"], "--cpu-offload": ["--gpus", "8"],
    "--mean-seq-len": [], "--flash-attention": [], "--interconnect": ["--gpus", "16", "--sharding", "fsdp"],
}
FLAG_VALUE = {
    "--method": "qlora", "--rank": "64", "--targets": "q_proj,v_proj", "--lora-dropout": "0", "--seq-len": "4096",
    "--micro-batch": "1", "--gpus": "8", "--sharding": "fsdp", "--optimizer": "adamw-8bit", "--precision": "bf16-pure",
    "--adapter-dtype": "bf16", "--qlora-embeddings-dtype": "fp32", "--loss": "stock", "--mean-seq-len": "512",
    "--grad-accum": "1", "--modules-to-save": "lm_head", "--interconnect": "25",
}
# Booleans: the form that changes the LoRA recipe's value
FLAG_FORM = {"--flash-attention": "--eager-attention", "--gradient-checkpointing": "--no-gradient-checkpointing",
             "--fused-loss": "--no-fused-loss", "--double-quant": "--no-double-quant"}


def _cli_json(capsys, args) -> dict:
    code, out, err = run_cli(["estimate", str(LORA), "--gpu", "H100", "--tokens", "1e9", "--json", *args], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("flag", [f for f in setup_flags()], ids=lambda f: f.flag)
def test_every_setup_flag_is_honoured_with_a_recipe(flag, capsys):
    context = FLAG_CONTEXT.get(flag.flag, [])
    if flag.hint is bool:
        given = [FLAG_FORM.get(flag.flag, flag.flag)]
    else:
        given = [flag.flag, FLAG_VALUE[flag.flag]]
    without, with_flag = _cli_json(capsys, context), _cli_json(capsys, context + given)
    assert any(line.startswith(given[0]) for line in with_flag["overrides"]), with_flag["overrides"]
    assert {k: v for k, v in with_flag.items() if k != "overrides"} != \
        {k: v for k, v in without.items() if k != "overrides"}, f"{flag.flag} changed nothing"


def test_named_flags_change_the_recipe_estimate(capsys):
    base = _cli_json(capsys, [])
    for args in (["--compile"], ["--loss", "stock"], ["--method", "full", "--precision", "bf16-pure"]):
        assert _cli_json(capsys, args)["gpu_hours"] != base["gpu_hours"] or \
            _cli_json(capsys, args)["peak_memory_gib"] != base["peak_memory_gib"], args


def test_cpu_offload_that_cannot_act_is_refused_in_one_line(capsys):
    code, _, err = run_cli(["estimate", str(LORA), "--gpu", "H100", "--cpu-offload"], capsys)
    assert code == 2 and err.count("\n") == 1 and "CPU offload" in err and "2 or more GPUs" in err
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--gpus", "4",
                            "--sharding", "ddp", "--cpu-offload"], capsys)
    assert code == 2 and "launch.strategy ddp" in err


def test_set_without_a_recipe_is_refused(capsys):
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--set", "lora.r=8"], capsys)
    assert code == 2 and "--set" in err


def test_a_bad_choice_names_the_flag_and_the_choices(capsys):
    code, _, err = run_cli(["estimate", str(LORA), "--gpu", "H100", "--optimizer", "sgd"], capsys)
    assert code == 2 and err.strip() == "advisor: error: --optimizer 'sgd': expected adamw, adamw-8bit or paged-adamw-8bit"


def test_short_dtype_names_read_as_torch_names(capsys):
    assert _cli_json(capsys, ["--adapter-dtype", "bf16"]) == _cli_json(capsys, ["--adapter-dtype", "bfloat16"]) | {
        "overrides": _cli_json(capsys, ["--adapter-dtype", "bf16"])["overrides"]}


# --- one plan function ----------------------------------------------------------------------------------------

def test_the_sharding_and_checkpointing_choices_are_called_only_by_the_plan():
    allowed = {ROOT / "advisor" / "plan" / "sizing.py", ROOT / "advisor" / "plan" / "launch_plan.py"}
    callers = []
    for path in list((ROOT / "advisor").rglob("*.py")) + list((ROOT / "runners").rglob("*.py")) + \
            list((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("choose_sharding", "choose_checkpointing") and path not in allowed:
                    callers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert callers == []


@pytest.mark.parametrize("gpu, gpus", [("A100-40GB", 4), ("RTX-4090", 2)])
def test_a_70b_qlora_that_no_card_holds_whole_is_sharded_by_memory(gpu, gpus):
    card = catalog.get_gpu(gpu)
    plan = plan_launch(TrainingSetup(arch=catalog.get_model("Llama-3.1-70B"), method="qlora", gpus=gpus), card)
    assert plan.sharding.strategy == "fsdp" and "exceeds" in plan.sharding.reason
    assert f"{card.usable_memory_gib:.1f} GiB usable" in plan.sharding.reason


def test_a_replica_that_fits_stays_ddp_unless_fsdp_is_clearly_faster():
    h100 = catalog.get_gpu("H100")
    lora = plan_launch(TrainingSetup(arch=catalog.get_model("Llama-3.1-8B"), gpus=8), h100)
    assert lora.sharding.strategy == "ddp" and "within" in lora.sharding.reason


def test_estimate_recommend_and_review_cost_a_job_on_the_same_plan():
    from advisor.decide.costing import cost_finetune
    from advisor.decide.situation import Situation
    s = Situation(tokens=2e9, base_model="Llama-3.1-8B", gpu="A100-80GB", gpus=8)
    option = cost_finetune(s, "lora", counts=[8])
    setup = TrainingSetup(arch=catalog.get_model("Llama-3.1-8B"), gpus=8)
    plan = plan_launch(setup, catalog.get_gpu("A100-80GB"))
    assert option.sharding == plan.sharding.strategy
    assert option.gradient_checkpointing == plan.setup.gradient_checkpointing
    assert option.memory_gib_per_gpu == pytest.approx(plan.memory.total)
