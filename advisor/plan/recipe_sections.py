"""The recipe's sections (model, lora, quant, data, train, eval, launch): typed fields with their meaning and defaults."""

from pathlib import Path
from typing import Annotated, Literal

from msgspec.structs import replace
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, field_validator, model_validator

from advisor.catalog.types import ModelArch
from advisor.catalog.load import get_model, load
from advisor.core.bounds import MAX_GPUS, MAX_TOKENS
from advisor.core.convert import convert, to_json
from advisor.core.errors import AdvisorError
from advisor.formulas.params import KNOWN_TARGETS, resolve_lora_targets
from advisor.formulas.setup import Dtype, Optimizer, SavedModule, Sharding

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _inline_arch(value) -> ModelArch:
    """model.arch, a msgspec Struct, read by msgspec: unknown keys refused, constraints checked; its InputError (a
    ValueError, which pydantic reports with the error attached) names the field inside the arch."""
    return value if isinstance(value, ModelArch) else convert(ModelArch, value)


# ModelArch inside the pydantic recipe: validated by msgspec, dumped as its JSON form
InlineArch = Annotated[ModelArch, PlainValidator(_inline_arch), PlainSerializer(to_json)]


class ModelSection(BaseModel):
    """Which model to adapt: a hub id or local path (`name`), or an architecture given inline (`arch`)."""

    model_config = _STRICT
    name: str | None = Field(default=None, description="Hugging Face hub id or local directory of the base model.")
    arch: InlineArch | None = Field(default=None, description="Architecture given inline (Hugging Face config fields); the "
                                                     "model is initialised randomly. For smoke tests and benchmarks.")
    random_init: bool = Field(default=False, description="Build `name`'s architecture from the advisor catalog and initialise it "
                                                 "randomly instead of loading weights (benchmarks; nothing is downloaded). "
                                                 "Always true for an inline `arch`.")
    tokenizer: str | None = Field(default=None, description="Tokenizer hub id or local path; defaults to `name`, or to the "
                                                    "byte-level tokenizer shipped with Rightsize for inline or random models.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weights and compute dtype; auto = bfloat16 on CUDA (float16 where bf16 is absent), float32 on CPU.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        default="sdpa", description="Attention kernel; sdpa picks flash or memory-efficient kernels when it can (packed rows give "
                            "it a block-causal mask); flex_attention skips the masked blocks of packed rows (compiled on "
                            "first use); flash_attention_2 needs the flash-attn package.")
    trust_remote_code: bool = Field(default=False, description="Run code shipped with the model. Off unless you set it; the run says so.")

    @model_validator(mode="before")
    @classmethod
    def _inline_is_random(cls, data):
        """An inline architecture has no weights to load, so the resolved recipe says random_init: true."""
        if isinstance(data, dict) and data.get("arch") is not None and "random_init" not in data:
            return {**data, "random_init": True}
        return data

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.arch is None):
            raise ValueError("give exactly one of model.name (hub id or local path) or model.arch (inline architecture)")
        if self.arch is not None and not self.random_init:
            raise ValueError("an inline model.arch is always initialised randomly: drop model.random_init: false")
        return self

    def resolve_arch(self) -> ModelArch:
        """The architecture the advisor estimates with: inline, from a local config.json, or from the catalog."""
        if self.arch is not None:
            if self.arch.name != "custom":
                return self.arch
            a = self.arch
            return replace(a, name=f"inline {a.model_type} {a.num_hidden_layers}x{a.hidden_size}")
        assert self.name is not None, "a model section names a model or gives its arch (checked on validation)"
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
    r: int = Field(default=16, gt=0, le=4096, description="Adapter rank.")
    alpha: float = Field(default=32, gt=0, description="Scaling numerator; the update is scaled by alpha / r (usually alpha = 2 r).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    targets: str | list[str] = Field(default="all-linear", description="all-linear (every projection peft reaches: on MoE "
                                                                "models also routers and experts), or a list of module "
                                                                "names: " + ", ".join(KNOWN_TARGETS) + ".")

    use_rslora: bool = Field(default=False, description="Rank-stabilised LoRA (Kalajievski 2023): scale by alpha / sqrt(r) "
                                                "instead of alpha / r, so higher ranks keep learning.")
    use_dora: bool = Field(default=False, description="DoRA (Liu et al. 2024): a trained magnitude per output feature on top of "
                                              "LoRA's direction; more parameters (counted) and a slower step.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        default="default", description="Adapter initialisation: default (A random, B zero), gaussian, pissa (principal singular "
                               "vectors of W; changes the base weights, so not with quant), olora (QR of W; likewise).")
    modules_to_save: tuple[SavedModule, ...] = Field(
        default=(), description="Modules trained in full and saved beside the adapter (needed when tokens are added to the "
                        "vocabulary); each is vocab x hidden trainable parameters, counted by the estimate.")
    dtype: Dtype = Field(
        default="float32", description="Dtype of the adapters, their gradients and AdamW moments: float32 (peft's default on a "
                               "16-bit base; 16 bytes per adapter parameter) or bfloat16 (as torchtune and fsdp_qlora "
                               "train them: 8 bytes, and no fp32 copy of each adapted projection's input).")

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
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type; NF4 is the QLoRA paper's.")
    double_quant: bool = Field(default=True, description="Quantise the quantisation constants too (saves ~0.37 bit/param).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Dtype the dequantised weights are multiplied in.")
    unquantized_dtype: Literal["compute", "float32"] = Field(
        default="compute", description="Dtype of the parameters 4-bit leaves unquantised (embeddings, norms, LM head): compute "
                               "keeps the model's dtype (less memory for the same loss, bench/results/qlora_dtype_cpu.json); "
                               "float32 upcasts them as peft's prepare_model_for_kbit_training does (~2 GiB more on an 8B "
                               "with a 128k vocabulary).")


class DataSource(BaseModel):
    """One more dataset mixed into the training data (data.mix), in the data section's format and field names."""

    model_config = _STRICT
    path: str = Field(description="File or save_to_disk directory (relative to the recipe file), or a hub dataset id with hub: true.")
    hub: bool = Field(default=False, description="path is a Hugging Face dataset id, read from the local hub cache (offline).")
    split: str = Field(default="train", description="Split to read from a hub dataset or a DatasetDict saved with save_to_disk.")
    weight: float = Field(default=1.0, gt=0, le=100, description="Times each example is used per epoch: 0.5 a random half, 2 every example twice "
                                                         "(a weight that selects no row, floor(rows x weight) = 0, is refused).")


class DataSection(BaseModel):
    """Training data: a file, a `save_to_disk` folder or a cached hub dataset, in one of five formats; more mixed in by weight; eval split off or its own file."""

    model_config = _STRICT
    path: str = Field(description="JSONL, JSON, Parquet or CSV file, or a directory from datasets' save_to_disk "
                                  "(relative paths are relative to the recipe file); a hub dataset id with hub: true.")
    hub: bool = Field(default=False, description="path is a Hugging Face dataset id (org/name), read from the local hub cache "
                                         "(offline; download it once with `hf download --repo-type dataset ID`).")
    split: str = Field(default="train", description="Split to read from a hub dataset or a DatasetDict saved with save_to_disk.")
    weight: float = Field(default=1.0, gt=0, le=100, description="Times each example of path is used per epoch (with data.mix).")
    mix: tuple[DataSource, ...] = Field(default=(), description="More datasets mixed into training, each with its weight "
                                                        "(same format and field names as this section).")
    eval_path: str | None = Field(default=None, description="Separate eval file or save_to_disk directory (same format); when "
                                                    "set, val_fraction is not taken from the training data.")
    format: Literal["text", "instruction", "chat", "sharegpt", "completion"] = Field(
        default="text", description="text: one field of plain text; instruction: Alpaca-style prompt/response fields; "
                            "chat: a list of {role, content} messages rendered with the tokenizer's chat template; "
                            "sharegpt: a list of {from, value} turns (human/gpt/system), rendered as chat; "
                            "completion: prompt and completion fields, loss on the completion.")
    conversations_field: str = Field(default="conversations", description="Field holding the list of {from, value} (format: sharegpt).")
    prompt_field: str = Field(default="prompt", description="Field holding the prompt (format: completion).")
    completion_field: str = Field(default="completion", description="Field holding the completion (format: completion).")
    text_field: str = Field(default="text", description="Field holding the text (format: text).")
    instruction_field: str = Field(default="instruction", description="Field holding the instruction (format: instruction).")
    input_field: str = Field(default="input", description="Optional context field appended to the instruction (format: instruction).")
    output_field: str = Field(default="output", description="Field holding the response (format: instruction).")
    messages_field: str = Field(default="messages", description="Field holding the list of {role, content} (format: chat).")
    seq_len: int = Field(default=2048, gt=1, le=1_048_576, description="Tokens per training sequence.")
    packing: bool = Field(default=True, description="Pack short examples into full sequences; attention does not cross examples.")
    train_on_prompt: bool = Field(default=False, description="Also compute loss on prompt tokens (instruction and chat formats).")
    val_fraction: float = Field(default=0.05, ge=0, lt=1, description="Share of examples held out for eval loss.")
    max_examples: int | None = Field(default=None, gt=0, description="Use only the first N examples.")
    on_bad_rows: Literal["error", "skip"] = Field(
        default="error", description="A row that fails validation in any source (data.path, data.mix, data.eval_path, hub "
                             "datasets: wrong type, null or missing field, a row of another format, unknown role, empty "
                             "messages, no token carrying loss after truncation): error refuses the run naming the "
                             "file, line and field; skip trains without such rows and says, per source, how many were "
                             "left out and why (also in report.json's data_notes). A source left with no row is refused "
                             "either way. A number in a text field is its text (\"input\": 0 is the input 0).")


class TrainSection(BaseModel):
    """The optimisation loop."""

    model_config = _STRICT
    epochs: float = Field(default=1.0, gt=0, le=1000, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(default=None, gt=0, description="Optimizer steps to run; overrides epochs.")
    micro_batch: int = Field(default=1, gt=0, le=4096, description="Sequences per GPU per forward pass.")
    grad_accum: int = Field(default=1, gt=0, le=4096, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(default=2e-4, gt=0, lt=1, description="Peak learning rate (2e-4 is the QLoRA paper's for 7-13B models).")
    weight_decay: float = Field(default=0.0, ge=0, lt=1, description="AdamW decoupled weight decay.")
    schedule: Literal["cosine", "linear", "constant"] = Field(default="cosine", description="Decay after warm-up.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    min_lr: float = Field(default=0.0, ge=0, lt=1, description="Learning rate the cosine or linear decay ends at (e.g. lr / 10, "
                                                       "as nanoGPT and Chinchilla do); 0 decays to zero.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        default="auto", description="Recompute each layer's activations in backward (saves memory, one more forward of compute). "
                            "auto: on only when the estimated peak without it would not leave 10% of the GPU free.")
    fused_loss: bool = Field(
        default=True, description="Compute the LM head and cross-entropy chunk by chunk, never holding the whole micro-batch's "
                          "logits (same loss and gradients; Llama, Mistral, Qwen2/3, else the model's own loss).")
    activation_offloading: bool = Field(
        default=False, description="Keep the tensors saved for backward (with checkpointing: each layer's input) in pinned CPU "
                           "memory and copy them back for backward, as torchtune's enable_activation_offloading does. "
                           "CUDA only (on the CPU there is nothing to offload, and the run says so); costs host-link "
                           "traffic each step.")
    host_memory: Literal["release", "allocator"] = Field(
        default="allocator", description="CPU runs only (on CUDA tensors live in the caching allocator): release gives "
                             "tensors of 8 MiB and more their own mappings and hands freed heap back to the OS after "
                             "each step (lower peak RSS, slower steps); allocator keeps the C library's behaviour. "
                             "bench/README.md has the paired measurement behind the default.")
    compile: bool = Field(
        default=False, description="torch.compile each decoder layer (regional: compiled once, reused by every layer; the first "
                           "steps take longer; eval runs eagerly).")
    optimizer: Optimizer = Field(
        default="adamw", description="adamw (torch, fused on CUDA) or bitsandbytes' 8-bit AdamW (paged: spills to CPU under pressure).")
    seed: int = Field(default=0, ge=0, description="Seeds Python, NumPy and torch on every rank.")
    checkpoint_every: int = Field(default=0, ge=0, description="Save a resumable checkpoint every N steps (0: only at the end).")
    eval_every: int = Field(default=0, ge=0, description="Eval loss every N steps (0: only at the end).")
    log_every: int = Field(default=1, gt=0, description="Write metrics every N steps.")
    merge: bool = Field(default=False, description="Also save the base model with the adapter merged in.")
    report_to: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = Field(
        default=(), description="Experiment trackers that also get metrics.jsonl's scalars at the same steps (default none): "
                        "tensorboard (RUN/tensorboard), wandb (WANDB_MODE=offline works offline), mlflow (MLFLOW_TRACKING_URI, "
                        "else a file store in RUN/mlruns). Needs the optional extra: pip install 'rightsize[track]'.")


class EvalSection(BaseModel):
    """What each eval (every train.eval_every steps and at the end) does besides the eval loss."""

    model_config = _STRICT
    samples: tuple[str, ...] = Field(default=(), description="Prompts generated from at each eval (greedy), written to "
                                                     "RUN/samples.jsonl and the trackers; formatted as the data is "
                                                     "(Alpaca prompt for instruction data, the chat template for chat).")
    max_new_tokens: int = Field(default=64, gt=0, le=4096, description="Tokens generated per sample.")
    early_stopping_patience: int = Field(default=0, ge=0, description="Stop when the eval loss has not improved by more than "
                                                              "early_stopping_delta for this many evals in a row (0: never).")
    early_stopping_delta: float = Field(default=0.0, ge=0, description="Smallest decrease of the eval loss that counts as an improvement.")


class LaunchSection(BaseModel):
    """Where and how wide: one process, or torchrun across GPUs and nodes."""

    model_config = _STRICT
    nproc_per_node: int = Field(default=1, gt=0, le=64, description="Processes (GPUs) per node; above 1 the run is launched with torchrun.")
    nnodes: int = Field(default=1, gt=0, le=4096, description="Nodes taking part (torchrun --nnodes).")
    strategy: Sharding = Field(
        default="auto", description="ddp replicates the model (LoRA); fsdp shards it (models that do not fit one GPU); auto picks by the estimate.")
    cpu_offload: bool = Field(default=False, description="With launch.strategy fsdp: keep the parameter shards, their gradients "
                                                 "and the optimizer state in CPU memory (FSDP2's CPUOffloadPolicy); the "
                                                 "optimizer step runs on the CPU. LoRA only.")
    gpu: str | None = Field(default=None, description="GPU type for estimates (catalog name); at run time the detected GPU is used.")
    internode_gbps: float | None = Field(default=None, gt=0, le=100_000, description=(
        "Network per GPU between nodes in Gb/s, for estimates (400: one NDR InfiniBand port per GPU); default: the GPU "
        "catalog's. Only traffic beyond the GPU's NVLink domain crosses it."))
    backend: Literal["auto", "nccl", "gloo"] = Field(
        default="auto", description="Process-group backend: auto = NCCL on CUDA GPUs; gloo runs every rank on the CPU (tests, "
                            "machines without GPUs). Without CUDA, more than one process per node needs gloo set here.")




# data.path as `advisor recommend --recipe-out` writes it without --data: `advisor validate`, `run` and `launch`
# refuse it in one line naming the key (advisor.plan.recipe.check_inputs).
DATA_PLACEHOLDER = "FILL-IN-your-training-data.jsonl"


class PlanSection(BaseModel):
    """The estimate the recipe was chosen on (`advisor recommend --recipe-out`): launch and estimate read it, training does not."""

    model_config = _STRICT
    chosen_by: str = Field(description="The command that chose the plan (advisor recommend, advisor review).")
    advisor_version: str = Field(description="Version of the advisor that made the estimate.")
    gpu: str = Field(description="GPU type the plan was costed on (catalog name; also launch.gpu).")
    gpus: int = Field(gt=0, le=MAX_GPUS, description="GPUs in all (launch.nproc_per_node x launch.nnodes).")
    nodes: int = Field(gt=0, le=MAX_GPUS, description="Nodes (launch.nnodes).")
    tokens: float = Field(gt=0, le=MAX_TOKENS, description="Tokens trained on, all epochs: what `advisor estimate` "
                                                           "costs when neither --tokens nor train.max_steps is given.")
    gpu_hours: float = Field(ge=0, description="Estimated GPU-hours.")
    gpu_hours_low: float | None = Field(default=None, ge=0, description="Lower end of the 80% interval on GPU-hours.")
    gpu_hours_high: float | None = Field(default=None, ge=0, description="Upper end of the 80% interval on GPU-hours: "
                                                                         "`advisor launch` sets the time limit from it.")
    memory_gib_per_gpu: float | None = Field(default=None, ge=0, description="Estimated peak memory per GPU, GiB.")
    cost_usd: float | None = Field(default=None, ge=0, description="Estimated dollars at the catalog's (or --price) rate.")
