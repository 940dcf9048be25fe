"""The recipe schema: one typed, validated description of a LoRA/QLoRA fine-tune (no torch needed to read it)."""

import difflib
import os
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any
from pathlib import Path

import msgspec
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from advisor.catalog.types import ModelArch
from advisor.core.errors import AdvisorError
from advisor.core.yaml_keys import UniqueKeyLoader
from advisor.formulas.setup import Method
from advisor.core.convert import InputError
from advisor.plan.recipe_sections import (
    _STRICT, DATA_PLACEHOLDER, DataSection, EvalSection, LaunchSection, LoraSection, ModelSection, PlanSection,
    QuantSection, TrainSection,
)


class Recipe(BaseModel):
    """A complete fine-tune: model, adapters, optional 4-bit quantisation, data, training and launch."""

    model_config = _STRICT
    name: str = Field(description="Short name of the recipe, used in reports and as the default run folder "
                                  "runs/<name>: letters, digits, '.', '_', '-' and '+', starting with a letter or digit.")
    model: ModelSection
    lora: LoraSection = LoraSection()
    quant: QuantSection | None = Field(default=None, description="Present for QLoRA.")
    data: DataSection
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    launch: LaunchSection = LaunchSection()
    plan: PlanSection | None = Field(default=None, description="The estimate the recipe was chosen on (written by "
                                                               "`advisor recommend --recipe-out`; read by `advisor launch`).")

    @property
    def method(self) -> Method:
        return "qlora" if self.quant is not None else "lora"

    @property
    def world_size(self) -> int:
        return self.launch.nproc_per_node * self.launch.nnodes

    @field_validator("name")
    @classmethod
    def _name_is_a_name(cls, value: str) -> str:
        if not RUN_NAME.fullmatch(value):
            raise ValueError("expected a plain name (letters, digits, '.', '_', '-', '+'; starting with a letter or "
                             f"digit; at most {RUN_NAME_MAX} characters), no path separators: it names the run folder")
        return value

    @model_validator(mode="after")
    def _lora_rank_fits_inline_model(self):
        if self.model.arch is not None:
            check_lora_rank(self.lora, self.model.resolve_arch(), ValueError)
        return self

    @model_validator(mode="after")
    def _seq_len_fits_model(self):
        if self.model.arch is not None and self.data.seq_len > self.model.arch.max_position_embeddings:
            raise ValueError(f"data.seq_len {self.data.seq_len} exceeds model.arch.max_position_embeddings "
                             f"{self.model.arch.max_position_embeddings}: lower data.seq_len or raise the model's")
        return self

    @model_validator(mode="after")
    def _quant_dtype_consistent(self):
        if self.quant is not None and self.model.dtype == "float16" and self.quant.compute_dtype == "bfloat16":
            raise ValueError("model.dtype float16 with quant.compute_dtype bfloat16: set quant.compute_dtype: float16 "
                             "(or model.dtype: bfloat16) so weights and compute agree")
        return self

    @model_validator(mode="after")
    def _init_keeps_4bit_weights(self):
        if self.quant is not None and self.lora.init in ("pissa", "olora"):
            raise ValueError(f"lora.init {self.lora.init} rewrites the base weights, which QLoRA keeps in 4 bits: use "
                             "lora.init: default (or gaussian) with quant")
        return self

    @model_validator(mode="after")
    def _min_lr_below_lr(self):
        if self.train.min_lr > self.train.lr:
            raise ValueError(f"train.min_lr {self.train.min_lr:g} is above train.lr {self.train.lr:g}: the schedule decays "
                             "from lr to min_lr, so set min_lr <= lr")
        return self

    @model_validator(mode="after")
    def _early_stopping_needs_evals(self):
        """Early stopping that can never act is refused, not ignored: no eval during training, an eval interval past
        the last step, or no eval data at all."""
        if not self.eval.early_stopping_patience:
            return self
        if not self.train.eval_every:
            raise ValueError("eval.early_stopping_patience needs evals during training: set train.eval_every")
        steps = self.train.max_steps
        if steps is not None and self.train.eval_every >= steps:
            raise ValueError(f"eval.early_stopping_patience cannot act: train.eval_every {self.train.eval_every} is not "
                             f"before train.max_steps {steps}, so no eval runs during training: lower "
                             "train.eval_every")
        if self.data.val_fraction == 0 and self.data.eval_path is None:
            raise ValueError("eval.early_stopping_patience needs eval data: data.val_fraction is 0 and there is no "
                             "data.eval_path")
        return self

    @model_validator(mode="after")
    def _eval_data_is_not_training_data(self):
        if self.data.eval_path is None:
            return self
        sources = {os.path.normpath(self.data.path): "data.path"}
        sources.update({os.path.normpath(m.path): f"data.mix[{i}].path" for i, m in enumerate(self.data.mix)})
        same = sources.get(os.path.normpath(self.data.eval_path))
        if same:
            raise ValueError(f"data.eval_path is {same} ({self.data.eval_path}): the eval loss would be measured on "
                             "training data; give a held-out file, or drop data.eval_path to split off "
                             "data.val_fraction")
        return self

    @model_validator(mode="after")
    def _cpu_offload_needs_fsdp(self):
        if self.launch.cpu_offload and self.launch.strategy != "fsdp":
            raise ValueError("launch.cpu_offload keeps FSDP's parameter shards in CPU memory: set launch.strategy: fsdp "
                             "(DDP and a single process keep the whole model on the GPU)")
        return self

    @model_validator(mode="after")
    def _cpu_offload_not_with_quant(self):
        if self.launch.cpu_offload and self.quant is not None:
            raise ValueError("launch.cpu_offload with quant (QLoRA) is not offered: the runner has not been verified "
                             "with bitsandbytes' 4-bit weights under FSDP2's CPU offload; estimate it with `advisor "
                             "estimate --method qlora --cpu-offload`, or drop launch.cpu_offload")
        return self

    @model_validator(mode="after")
    def _bf16_adapters_need_a_bf16_model(self):
        if self.lora.dtype == "bfloat16" and self.model.dtype == "float16":
            raise ValueError("lora.dtype bfloat16 with model.dtype float16: fp16 autocast would multiply bf16 adapters in "
                             "fp16; use lora.dtype: float32, or model.dtype: bfloat16")
        return self

    @model_validator(mode="after")
    def _eight_bit_optimizer_not_with_fsdp(self):
        if self.train.optimizer != "adamw" and self.launch.strategy == "fsdp":
            raise ValueError(f"train.optimizer {self.train.optimizer} cannot shard its state under FSDP: use "
                             "train.optimizer: adamw with launch.strategy: fsdp")
        return self


RUN_NAME_MAX = 128  # a folder name well under every filesystem's 255-byte limit
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,%d}" % (RUN_NAME_MAX - 1))


def lora_rank_limit(arch: ModelArch, lora: LoraSection) -> tuple[int, str] | None:
    """The largest useful rank: the smallest dimension of any adapted projection (B A of a d_out x d_in layer has
    rank at most min(d_in, d_out); Hu et al. 2021, LoRA §4.1), and the projection it comes from. Projections are read
    from every layer of the architecture (advisor.catalog.arch), so names a layer lacks (a MoE's experts, another family's
    fused projections) are skipped; None when no target is an nn.Linear of the model."""
    from advisor.catalog.arch import describe
    smallest: dict[str, int] = {}
    for layer in describe(arch).layers:
        for x in layer.linears:
            smallest[x.name] = min(smallest.get(x.name, x.in_features), x.in_features, x.out_features)
    present = [t for t in lora.target_modules if t in smallest]
    if not present:
        return None
    name = min(present, key=smallest.__getitem__)
    return smallest[name], name


def check_lora_rank(lora: LoraSection, arch: ModelArch, error: Callable[[str], Exception] = AdvisorError) -> None:
    """Policy: refuse a rank above the adapted layers' dimensions (extra rank adds parameters, not expressiveness)."""
    found = lora_rank_limit(arch, lora)
    if found is None:
        return
    limit, name = found
    if lora.r > limit:
        raise error(f"lora.r {lora.r} exceeds the {limit} dimensions of {name} ({arch.name}): the update cannot "
                    f"have a higher rank; use lora.r <= {limit}")


def check_model_source(recipe: Recipe, source: str | Path | None = None) -> None:
    """A model.name that is a local path must be a folder with config.json and safetensors weights (what the runner
    loads). Hub ids are not checked here (that needs the network)."""
    name = recipe.model.name
    if name is None or recipe.model.random_init:
        return
    where = f"{source}: " if source else ""
    path = Path(name).expanduser()
    if not (looks_like_path(name) or path.exists()):
        return
    if not path.is_dir():
        raise AdvisorError(f"{where}model.name {name}: no such model folder (expected a local folder with "
                           "config.json and *.safetensors, or a hub id such as org/model)")
    if not (path / "config.json").is_file():
        raise AdvisorError(f"{where}model.name {name}: the folder has no config.json")
    if not any(path.glob("*.safetensors")):
        raise AdvisorError(f"{where}model.name {name}: the folder has no *.safetensors weights (only a config?); "
                           "save the model with save_pretrained(..., safe_serialization=True)")


# --- loading -----------------------------------------------------------------------------------------

def read_yaml_mapping(path: Path) -> dict:
    """Load a YAML file that must be a mapping, safely; every failure is one AdvisorError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AdvisorError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AdvisorError(f"{path}: is a directory, expected a YAML recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AdvisorError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:
        raise AdvisorError(f"{path}: invalid YAML: nested too deeply for a recipe") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AdvisorError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        raise AdvisorError(f"{path}: empty file; expected a recipe mapping with name, model and data")
    if not isinstance(data, dict):
        raise AdvisorError(f"{path}: expected a mapping (key: value) at the top, got a {type(data).__name__}")
    return data


# What users coming from peft, the HF Trainer, bitsandbytes or axolotl are likely to type, and our name for it.
KEY_SYNONYMS = {
    "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "targets",
    "lora_target_modules": "targets", "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "per_device_train_batch_size": "micro_batch", "micro_batch_size": "micro_batch", "batch_size": "micro_batch",
    "gradient_accumulation_steps": "grad_accum", "lr_scheduler_type": "schedule", "lr_scheduler": "schedule",
    "warmup": "warmup_steps", "max_grad_norm_clip": "max_grad_norm", "max_seq_length": "seq_len",
    "sequence_len": "seq_len", "max_length": "seq_len", "sample_packing": "packing", "bnb_4bit_quant_type": "quant_type",
    "bnb_4bit_use_double_quant": "double_quant", "bnb_4bit_compute_dtype": "compute_dtype", "save_steps": "checkpoint_every",
    "eval_steps": "eval_every", "logging_steps": "log_every", "torch_dtype": "dtype", "base_model": "name",
    "model_name_or_path": "name", "dataset": "path", "optim": "optimizer", "nproc": "nproc_per_node",
}


# Keys other tools put at the top level of their configs (axolotl, the HF Trainer), and where ours live.
KEY_PATHS = {
    "base_model": "model.name", "base_model_config": "model.name", "model_name_or_path": "model.name",
    "tokenizer_config": "model.tokenizer", "tokenizer_type": "model.tokenizer", "trust_remote_code": "model.trust_remote_code",
    "torch_dtype": "model.dtype", "bf16": "model.dtype", "fp16": "model.dtype", "flash_attention": "model.attn_implementation",
    "sdp_attention": "model.attn_implementation", "lora_r": "lora.r", "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout", "lora_target_modules": "lora.targets", "lora_target_linear": "lora.targets",
    "target_modules": "lora.targets", "load_in_4bit": "quant", "adapter": "quant (present for QLoRA)",
    "datasets": "data.path", "dataset": "data.path", "sequence_len": "data.seq_len", "max_seq_length": "data.seq_len",
    "sample_packing": "data.packing", "train_on_inputs": "data.train_on_prompt", "val_set_size": "data.val_fraction",
    "micro_batch_size": "train.micro_batch", "per_device_train_batch_size": "train.micro_batch",
    "gradient_accumulation_steps": "train.grad_accum", "learning_rate": "train.lr", "num_epochs": "train.epochs",
    "num_train_epochs": "train.epochs", "lr_scheduler": "train.schedule", "lr_scheduler_type": "train.schedule",
    "warmup_steps": "train.warmup_steps", "weight_decay": "train.weight_decay", "max_grad_norm": "train.max_grad_norm",
    "optimizer": "train.optimizer", "optim": "train.optimizer", "gradient_checkpointing": "train.gradient_checkpointing",
    "save_steps": "train.checkpoint_every", "eval_steps": "train.eval_every", "logging_steps": "train.log_every",
    "max_steps": "train.max_steps", "seed": "train.seed", "output_dir": "the --out flag of advisor run",
}


def _unwrapped(annotation):
    """An annotation without typing.Annotated's wrapper (the inline arch carries its msgspec validator in one)."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _is_section(annotation) -> bool:
    """A recipe section (a pydantic model) or a msgspec Struct inside one (the inline ModelArch)."""
    annotation = _unwrapped(annotation)
    return isinstance(annotation, type) and issubclass(annotation, (BaseModel, msgspec.Struct))


def _field_types(section) -> dict:
    """A section's field names and their annotations (pydantic model or msgspec Struct)."""
    if issubclass(section, BaseModel):
        return {name: field.annotation for name, field in section.model_fields.items()}
    return {f.name: f.type for f in msgspec.structs.fields(section)}


def _section_model(loc: tuple) -> type | None:
    """The section (model or record) that owns the field at `loc`'s parent, to suggest the nearest valid key."""
    model: type = Recipe
    for part in loc[:-1]:
        annotation = _field_types(model).get(part) if isinstance(part, str) else None
        if annotation is None:
            return model if isinstance(part, int) else None
        arms = typing.get_args(annotation) if typing.get_origin(annotation) is not typing.Annotated else ()
        candidates = [a for a in arms or (annotation,) if _is_section(a)]
        if not candidates:
            return None
        model = _unwrapped(candidates[0])
    return model


def _sections_with(key: str) -> list[str]:
    """The recipe sections that have a field named `key` (for a key written in the wrong section)."""
    sections = []
    for name, field in Recipe.model_fields.items():
        for model in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(model, type) and issubclass(model, BaseModel) and key in model.model_fields:
                sections.append(name)
    return sections


def _suggest_key(loc: tuple) -> str:
    """The `; did you mean ...?` hint for an unknown key: a synonym here, another tool's key mapped to ours, the same
    key in another section, or the nearest spelling."""
    owner = _section_model(loc)
    valid = list(_field_types(owner)) if owner else []
    key, prefix = str(loc[-1]), loc[:-1]
    synonym = KEY_SYNONYMS.get(key.lower())
    if prefix and synonym in valid:
        return f"; did you mean {'.'.join(map(str, prefix + (synonym,)))}?"
    if not prefix and key.lower() in KEY_PATHS:
        return f"; did you mean {KEY_PATHS[key.lower()]}?"
    elsewhere = _sections_with(key) if not prefix else []
    if len(elsewhere) == 1:
        return f"; did you mean {elsewhere[0]}.{key}?"
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {'.'.join(map(str, prefix + (close[0],)))}?"
    return f"; valid keys here: {', '.join(valid)}" if valid else ""


# pydantic's error type for a key no field takes
_UNKNOWN_KEY = "extra_forbidden"
# An InputError's kind (the inline arch, read by msgspec: advisor.core.convert) as pydantic's error type
_INPUT_ERROR_TYPES = {"unknown": _UNKNOWN_KEY, "missing": "missing"}


def _unpacked(err: Mapping[str, Any]) -> dict:
    """pydantic's error with an InputError inside it (model.arch) spelled as pydantic's own: its path appended to the
    location, its kind as the error type, its message."""
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, InputError):
        return {**err, "loc": loc + inner.loc, "type": _INPUT_ERROR_TYPES.get(inner.kind, err["type"]), "msg": inner.msg}
    return {**err, "loc": loc}


def _describe_one(err: dict) -> str:
    loc = err["loc"]
    where = ".".join(str(p) for p in loc) or "(recipe)"
    if err["type"] == _UNKNOWN_KEY:
        return f"unknown key {where}{_suggest_key(loc)}"
    if err["type"] == "missing":
        return f"missing required key {where}"
    msg = err["msg"].removeprefix("Value error, ")
    extra = f" (got {err['input']!r})" if not isinstance(err.get("input"), (dict, list)) and "input" in err else ""
    return f"{where}: {msg}{extra}"


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming every bad field, what is wrong and how to fix it (nearest key for misspellings, our key for
    another tool's). A misspelled key also makes its intended key "missing", so unknown keys are reported first."""
    errors = sorted((_unpacked(e) for e in exc.errors()),
                    key=lambda e: 0 if e["type"] == _UNKNOWN_KEY else 2 if e["type"] == "missing" else 1)
    problems = list(dict.fromkeys(_describe_one(e) for e in errors))
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems: " + " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))


def set_override(data: dict, assignment: str) -> dict:
    """Apply one `key.path=value` override (value parsed as YAML) to a raw recipe mapping."""
    if "=" not in assignment:
        raise AdvisorError(f"--set {assignment!r}: expected key.path=value, e.g. --set train.lr=1e-4")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise AdvisorError(f"--set {assignment!r}: empty key; expected key.path=value")
    try:
        value = yaml.load(raw, Loader=UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError:
        raise AdvisorError(f"--set {assignment!r}: value is not valid YAML") from None
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise AdvisorError(f"--set {assignment!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value
    return data


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; relative data paths are resolved against the recipe's folder."""
    path = Path(path)
    data = read_yaml_mapping(path)
    for assignment in overrides:
        data = set_override(data, assignment)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise AdvisorError(describe_validation_error(exc, str(path))) from None
    except RecursionError:
        raise AdvisorError(f"{path}: nested too deeply for a recipe") from None
    if recipe.model.arch is None:
        try:
            arch = recipe.model.resolve_arch()
        except (AdvisorError, OSError, ValueError):
            arch = None  # a hub id the catalog does not know: the runner checks it against the loaded model
        if arch is not None:
            check_lora_rank(recipe.lora, arch, lambda msg: AdvisorError(f"{path}: {msg}"))
    return recipe.model_copy(update={"data": _resolve_data_paths(recipe.data, path.parent)})


def _resolve_path(value: str, base: Path) -> str:
    local = Path(value).expanduser()
    return str(local if local.is_absolute() else (base / local).resolve())


def _resolve_data_paths(data: DataSection, base: Path) -> DataSection:
    """Local data paths (training, mixed-in and eval) made absolute against the recipe's folder; hub ids kept."""
    mix = tuple(s if s.hub else s.model_copy(update={"path": _resolve_path(s.path, base)}) for s in data.mix)
    return data.model_copy(update={"path": data.path if data.hub else _resolve_path(data.path, base), "mix": mix,
                                   "eval_path": _resolve_path(data.eval_path, base) if data.eval_path else None})


def looks_like_path(name: str) -> bool:
    """model.name names a local directory rather than a hub id (`org/model`): it starts with /, . or ~, ends with /,
    or has more than one /."""
    return name.startswith(("/", ".", "~")) or name.endswith("/") or name.count("/") > 1


def check_inputs(recipe: Recipe, source: str | Path, data: bool = True) -> None:
    """The files the recipe names exist: its data (unless `data` is False, e.g. when tokens are given) and its model
    when `model.name` is a local path. One AdvisorError line naming the key otherwise."""
    name = recipe.model.name
    if name is not None and looks_like_path(name) and not Path(name).expanduser().exists():
        raise AdvisorError(f"{source}: model.name {name}: no such model folder (it does not exist; a local path, "
                           "while a hub id is org/model)")
    if not data:
        return
    d = recipe.data
    if Path(d.path).name == DATA_PLACEHOLDER:
        raise AdvisorError(f"{source}: data.path is the placeholder {DATA_PLACEHOLDER}: set it to your training data "
                           "(or --set data.path=FILE)")
    local = [("data.path", d.path)] if not d.hub else []
    local += [(f"data.mix[{i}].path", s.path) for i, s in enumerate(d.mix) if not s.hub]
    local += [("data.eval_path", d.eval_path)] if d.eval_path else []
    for key, value in local:
        if not Path(value).exists():
            raise AdvisorError(f"{source}: {key} {value} does not exist (to cost a dataset you do not have "
                               f"yet: advisor estimate {source} --tokens N)")


def check_before_loading(recipe: Recipe, source: str | Path) -> ModelArch:
    """What `advisor run` refuses before it loads a weight, checked from the recipe alone, for `advisor validate` and
    `advisor run` alike: the files it names (check_inputs, check_model_source), a local tokenizer folder, and an
    architecture the estimate and the runner can size (a model the catalog, the local cache or a config.json
    describes). Returns the architecture."""
    check_inputs(recipe, source)
    check_model_source(recipe, source)
    tokenizer = recipe.model.tokenizer
    if tokenizer and tokenizer != "byte" and looks_like_path(tokenizer) and not Path(tokenizer).expanduser().exists():
        raise AdvisorError(f"{source}: model.tokenizer {tokenizer}: no such folder (a local path, while a hub id is "
                           "org/name)")
    try:
        return recipe.model.resolve_arch()
    except AdvisorError:
        raise
    except (OSError, ValueError) as exc:
        raise AdvisorError(f"{source}: model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe (every default spelled out), as written to a run's recipe.resolved.yaml."""
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=False), sort_keys=False)
