"""The recipe schema: one typed, validated description of a LoRA/QLoRA fine-tune (no torch needed to read it)."""

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advisor.catalog import ModelArch, get_model, load
from advisor.errors import AdvisorError
from advisor.params import LINEAR_MODULES, resolve_lora_targets

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ModelSection(BaseModel):
    """Which model to adapt: a hub id or local path (`name`), or an architecture given inline (`arch`)."""

    model_config = _STRICT
    name: str | None = Field(None, description="Hugging Face hub id or local directory of the base model.")
    arch: ModelArch | None = Field(None, description="Architecture given inline (Hugging Face config fields); the "
                                                     "model is initialised randomly. For smoke tests and benchmarks.")
    random_init: bool = Field(False, description="Build `name`'s architecture from the advisor catalog and initialise it "
                                                 "randomly instead of loading weights (benchmarks; nothing is downloaded).")
    tokenizer: str | None = Field(None, description="Tokenizer hub id or local path; defaults to `name`, or to the "
                                                    "byte-level tokenizer shipped with Rightsize for inline or random models.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights and compute dtype; auto = bfloat16 on CUDA (float16 where bf16 is absent), float32 on CPU.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        "sdpa", description="Attention kernel; sdpa picks flash or memory-efficient kernels when it can (packed rows give "
                            "it a block-causal mask); flex_attention skips the masked blocks of packed rows (compiled on "
                            "first use); flash_attention_2 needs the flash-attn package.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you set it; the run says so.")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.arch is None):
            raise ValueError("give exactly one of model.name (hub id or local path) or model.arch (inline architecture)")
        if self.random_init and self.name is None:
            raise ValueError("model.random_init applies to model.name; an inline model.arch is always random")
        return self

    def resolve_arch(self) -> ModelArch:
        """The architecture the advisor estimates with: inline, from a local config.json, or from the catalog."""
        if self.arch is not None:
            if self.arch.name != "custom":
                return self.arch
            a = self.arch
            return a.model_copy(update={"name": f"inline {a.model_type} {a.num_hidden_layers}x{a.hidden_size}"})
        path = Path(self.name).expanduser()
        if (path / "config.json").is_file():
            return get_model(str(path))
        by_hub = {e.hub_id.lower(): e for e in load("models").values() if e.hub_id}
        if self.name.lower() in by_hub:
            return by_hub[self.name.lower()]
        return get_model(self.name)


class LoraSection(BaseModel):
    """LoRA adapters (Hu et al. 2021): W + (alpha / r) B A on each targeted projection."""

    model_config = _STRICT
    r: int = Field(16, gt=0, le=4096, description="Adapter rank.")
    alpha: float = Field(32, gt=0, description="Scaling numerator; the update is scaled by alpha / r (usually alpha = 2 r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    targets: str | list[str] = Field("all-linear", description="all-linear, or a list of projections: "
                                                                + ", ".join(LINEAR_MODULES) + ".")

    use_rslora: bool = Field(False, description="Rank-stabilised LoRA (Kalajievski 2023): scale by alpha / sqrt(r) "
                                                "instead of alpha / r, so higher ranks keep learning.")
    use_dora: bool = Field(False, description="DoRA (Liu et al. 2024): a trained magnitude per output feature on top of "
                                              "LoRA's direction; more parameters (counted) and a slower step.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default", description="Adapter initialisation: default (A random, B zero), gaussian, pissa (principal singular "
                               "vectors of W; changes the base weights, so not with quant), olora (QR of W; likewise).")
    modules_to_save: tuple[Literal["embed_tokens", "lm_head"], ...] = Field(
        (), description="Modules trained in full and saved beside the adapter (needed when tokens are added to the "
                        "vocabulary); each is vocab x hidden trainable parameters, counted by the estimate.")

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value):
        try:
            resolve_lora_targets(value)
        except AdvisorError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def target_modules(self) -> tuple[str, ...]:
        return resolve_lora_targets(self.targets)


class QuantSection(BaseModel):
    """4-bit base weights for QLoRA (Dettmers et al. 2023): present means QLoRA, absent means LoRA."""

    model_config = _STRICT
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is the QLoRA paper's.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.37 bit/param).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Dtype the dequantised weights are multiplied in.")


class DataSource(BaseModel):
    """One more dataset mixed into the training data (data.mix), in the data section's format and field names."""

    model_config = _STRICT
    path: str = Field(description="File or save_to_disk directory (relative to the recipe file), or a hub dataset id with hub: true.")
    hub: bool = Field(False, description="path is a Hugging Face dataset id, read from the local hub cache (offline).")
    split: str = Field("train", description="Split to read from a hub dataset or a DatasetDict saved with save_to_disk.")
    weight: float = Field(1.0, gt=0, le=100, description="Times each example is used per epoch: 0.5 a random half, 2 every example twice.")


class DataSection(BaseModel):
    """Training data: a file, a `save_to_disk` folder or a cached hub dataset, in one of five formats; more mixed in by weight; eval split off or its own file."""

    model_config = _STRICT
    path: str = Field(description="JSONL, JSON, Parquet or CSV file, or a directory from datasets' save_to_disk "
                                  "(relative paths are relative to the recipe file); a hub dataset id with hub: true.")
    hub: bool = Field(False, description="path is a Hugging Face dataset id (org/name), read from the local hub cache "
                                         "(offline; download it once with `hf download --repo-type dataset ID`).")
    split: str = Field("train", description="Split to read from a hub dataset or a DatasetDict saved with save_to_disk.")
    weight: float = Field(1.0, gt=0, le=100, description="Times each example of path is used per epoch (with data.mix).")
    mix: tuple[DataSource, ...] = Field((), description="More datasets mixed into training, each with its weight "
                                                        "(same format and field names as this section).")
    eval_path: str | None = Field(None, description="Separate eval file or save_to_disk directory (same format); when "
                                                    "set, val_fraction is not taken from the training data.")
    format: Literal["text", "instruction", "chat", "sharegpt", "completion"] = Field(
        "text", description="text: one field of plain text; instruction: Alpaca-style prompt/response fields; "
                            "chat: a list of {role, content} messages rendered with the tokenizer's chat template; "
                            "sharegpt: a list of {from, value} turns (human/gpt/system), rendered as chat; "
                            "completion: prompt and completion fields, loss on the completion.")
    conversations_field: str = Field("conversations", description="Field holding the list of {from, value} (format: sharegpt).")
    prompt_field: str = Field("prompt", description="Field holding the prompt (format: completion).")
    completion_field: str = Field("completion", description="Field holding the completion (format: completion).")
    text_field: str = Field("text", description="Field holding the text (format: text).")
    instruction_field: str = Field("instruction", description="Field holding the instruction (format: instruction).")
    input_field: str = Field("input", description="Optional context field appended to the instruction (format: instruction).")
    output_field: str = Field("output", description="Field holding the response (format: instruction).")
    messages_field: str = Field("messages", description="Field holding the list of {role, content} (format: chat).")
    seq_len: int = Field(2048, gt=1, le=1_048_576, description="Tokens per training sequence.")
    packing: bool = Field(True, description="Pack short examples into full sequences; attention does not cross examples.")
    train_on_prompt: bool = Field(False, description="Also compute loss on prompt tokens (instruction and chat formats).")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of examples held out for eval loss.")
    max_examples: int | None = Field(None, gt=0, description="Use only the first N examples.")


class TrainSection(BaseModel):
    """The optimisation loop."""

    model_config = _STRICT
    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs.")
    micro_batch: int = Field(1, gt=0, le=4096, description="Sequences per GPU per forward pass.")
    grad_accum: int = Field(1, gt=0, le=4096, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate (2e-4 is the QLoRA paper's for 7-13B models).")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="AdamW decoupled weight decay.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    min_lr: float = Field(0.0, ge=0, lt=1, description="Learning rate the cosine or linear decay ends at (e.g. lr / 10, "
                                                       "as nanoGPT and Chinchilla do); 0 decays to zero.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute each layer's activations in backward (saves memory, one more forward of compute). "
                            "auto: on only when the estimated peak without it would not leave 10% of the GPU free.")
    fused_loss: bool = Field(
        True, description="Compute the LM head and cross-entropy chunk by chunk, never holding the whole micro-batch's "
                          "logits (same loss and gradients; Llama, Mistral, Qwen2/3, else the model's own loss).")
    compile: bool = Field(
        False, description="torch.compile each decoder layer (regional: compiled once, reused by every layer; the first "
                           "steps take longer; eval runs eagerly).")
    optimizer: Literal["adamw", "adamw-8bit", "paged-adamw-8bit"] = Field(
        "adamw", description="adamw (torch, fused on CUDA) or bitsandbytes' 8-bit AdamW (paged: spills to CPU under pressure).")
    seed: int = Field(0, ge=0, description="Seeds Python, NumPy and torch on every rank.")
    checkpoint_every: int = Field(0, ge=0, description="Save a resumable checkpoint every N steps (0: only at the end).")
    eval_every: int = Field(0, ge=0, description="Eval loss every N steps (0: only at the end).")
    log_every: int = Field(1, gt=0, description="Write metrics every N steps.")
    merge: bool = Field(False, description="Also save the base model with the adapter merged in.")
    report_to: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = Field(
        (), description="Experiment trackers that also get metrics.jsonl's scalars at the same steps (default none): "
                        "tensorboard (RUN/tensorboard), wandb (WANDB_MODE=offline works offline), mlflow (MLFLOW_TRACKING_URI, "
                        "else a file store in RUN/mlruns). Needs the optional extra: pip install 'rightsize[track]'.")


class EvalSection(BaseModel):
    """What each eval (every train.eval_every steps and at the end) does besides the eval loss."""

    model_config = _STRICT
    samples: tuple[str, ...] = Field((), description="Prompts generated from at each eval (greedy), written to "
                                                     "RUN/samples.jsonl and the trackers; formatted as the data is "
                                                     "(Alpaca prompt for instruction data, the chat template for chat).")
    max_new_tokens: int = Field(64, gt=0, le=4096, description="Tokens generated per sample.")
    early_stopping_patience: int = Field(0, ge=0, description="Stop when the eval loss has not improved by more than "
                                                              "early_stopping_delta for this many evals in a row (0: never).")
    early_stopping_delta: float = Field(0.0, ge=0, description="Smallest decrease of the eval loss that counts as an improvement.")


class LaunchSection(BaseModel):
    """Where and how wide: one process, or torchrun across GPUs and nodes."""

    model_config = _STRICT
    nproc_per_node: int = Field(1, gt=0, le=64, description="Processes (GPUs) per node; above 1 the run is launched with torchrun.")
    nnodes: int = Field(1, gt=0, le=4096, description="Nodes taking part (torchrun --nnodes).")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="ddp replicates the model (LoRA); fsdp shards it (models that do not fit one GPU); auto picks by the estimate.")
    gpu: str | None = Field(None, description="GPU type for estimates (catalog name); at run time the detected GPU is used.")
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="Process-group backend: auto = NCCL on CUDA GPUs; gloo runs every rank on the CPU (tests, "
                            "machines without GPUs). Without CUDA, more than one process per node needs gloo set here.")


class Recipe(BaseModel):
    """A complete fine-tune: model, adapters, optional 4-bit quantisation, data, training and launch."""

    model_config = _STRICT
    name: str = Field(description="Short name of the recipe, used in reports.")
    model: ModelSection
    lora: LoraSection = LoraSection()
    quant: QuantSection | None = Field(None, description="Present for QLoRA.")
    data: DataSection
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    launch: LaunchSection = LaunchSection()

    @property
    def method(self) -> str:
        return "qlora" if self.quant is not None else "lora"

    @property
    def world_size(self) -> int:
        return self.launch.nproc_per_node * self.launch.nnodes

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
        if self.eval.early_stopping_patience and not self.train.eval_every:
            raise ValueError("eval.early_stopping_patience needs evals during training: set train.eval_every")
        return self

    @model_validator(mode="after")
    def _eight_bit_optimizer_not_with_fsdp(self):
        if self.train.optimizer != "adamw" and self.launch.strategy == "fsdp":
            raise ValueError(f"train.optimizer {self.train.optimizer} cannot shard its state under FSDP: use "
                             "train.optimizer: adamw with launch.strategy: fsdp")
        return self


# --- loading -----------------------------------------------------------------------------------------

class _SafeLoaderNoDupes(yaml.SafeLoader):
    """SafeLoader (no object-constructing tags) that also refuses duplicate keys, a silent-override trap."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_SafeLoaderNoDupes.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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
        data = yaml.load(text, Loader=_SafeLoaderNoDupes)  # noqa: S506 - SafeLoader subclass
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


def _section_model(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc`'s parent, to suggest the nearest valid key."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return model if isinstance(part, int) else None
        annotation = field.annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
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
    valid = list(owner.model_fields) if owner else []
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


def _describe_one(err: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    where = ".".join(str(p) for p in loc) or "(recipe)"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where}{_suggest_key(loc)}"
    if err["type"] == "missing":
        return f"missing required key {where}"
    msg = err["msg"].removeprefix("Value error, ")
    extra = f" (got {err['input']!r})" if not isinstance(err.get("input"), (dict, list)) and "input" in err else ""
    return f"{where}: {msg}{extra}"


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming every bad field, what is wrong and how to fix it (nearest key for misspellings, our key for
    another tool's). A misspelled key also makes its intended key "missing", so unknown keys are reported first."""
    errors = sorted(exc.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 2}.get(e["type"], 1))
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
        value = yaml.load(raw, Loader=_SafeLoaderNoDupes)  # noqa: S506
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
    return recipe.model_copy(update={"data": _resolve_data_paths(recipe.data, path.parent)})


def _resolve_path(value: str, base: Path) -> str:
    local = Path(value).expanduser()
    return str(local if local.is_absolute() else (base / local).resolve())


def _resolve_data_paths(data: DataSection, base: Path) -> DataSection:
    """Local data paths (training, mixed-in and eval) made absolute against the recipe's folder; hub ids kept."""
    mix = tuple(s if s.hub else s.model_copy(update={"path": _resolve_path(s.path, base)}) for s in data.mix)
    return data.model_copy(update={"path": data.path if data.hub else _resolve_path(data.path, base), "mix": mix,
                                   "eval_path": _resolve_path(data.eval_path, base) if data.eval_path else None})


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe (every default spelled out), as written to a run's recipe.resolved.yaml."""
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=False), sort_keys=False)
