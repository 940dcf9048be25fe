"""Catalogs of GPUs, model architectures and API prices: shipped YAML, overridable by a user file."""

from __future__ import annotations

import datetime
import dataclasses
import difflib
import functools
import json
import os
import re
import zlib
from pathlib import Path
from typing import Literal

from advisor.arch import HF_CONFIG_DEFAULTS, NESTED_CONFIG_KEYS, SUPPORTED_MODEL_TYPES, config_value, unsupported
from advisor import hub
from advisor.errors import AdvisorError
from advisor.records import RecordError, bounded, construct, parse, record, to_json

DATA_DIR = Path(__file__).parent / "data"


def user_config_dir() -> Path:
    """Where user catalogs and calibration live: $RIGHTSIZE_CONFIG_DIR, else $XDG_CONFIG_HOME/rightsize."""
    if os.environ.get("RIGHTSIZE_CONFIG_DIR"):
        return Path(os.environ["RIGHTSIZE_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "rightsize"


CALIBRATION_FILE = "calibration.json"


def default_calibration_path() -> Path:
    """The user's calibration (`advisor calibrate` writes it; every estimate reads it when it exists)."""
    return user_config_dir() / CALIBRATION_FILE


@record
class Gpu:
    """One GPU type: what the estimators need to turn FLOPs and bytes into hours, dollars and GPU counts."""

    name: str
    aliases: list[str] = bounded(default_factory=list)
    memory_gib: float = bounded(gt=0, description="Device memory in GiB (2^30 bytes) as the device reports it: "
                              "torch.cuda.get_device_properties().total_memory (cudaDeviceProp.totalGlobalMem), which "
                              "is a few hundred MiB below nvidia-smi's total.")
    memory_reported: bool = bounded(True, description="memory_gib is a published device-reported figure (memory_source "
                                                   "quotes it); false: a conversion of the marketing figure.")
    memory_source: str = bounded("", description="Where memory_gib comes from (deviceQuery, a torch OOM message, ...).")
    memory_nvidia_smi_mib: float | None = bounded(None, description="nvidia-smi's total, MiB (informational).")
    cuda_context_gib: float = bounded(0.5, ge=0, description="Device memory the CUDA context (driver, lazily loaded "
                                    "kernels) takes outside PyTorch's allocator; see CUDA_CONTEXT_SOURCE.")
    peak_tflops_bf16: float = bounded(gt=0, description="Dense bf16 (or fp16 where bf16 is absent) tensor-core peak, TFLOP/s.")
    memory_bandwidth_gbs: float = bounded(gt=0, description="Memory bandwidth, GB/s.")
    interconnect: str = bounded("", description="The GPU-to-GPU link inside a node.")
    interconnect_gbs: float | None = bounded(None, gt=0, description="GPU-to-GPU bandwidth per GPU per direction, GB/s "
                                           "(NVLink datasheet figures are bidirectional and are halved).")
    interconnect_source: str = ""
    host_link_gbs: float | None = bounded(None, gt=0, description="Host (CPU) link per GPU per direction, GB/s: what "
                                        "CPU offload moves weights and states over. None: PCIe Gen4 x16.")
    price_usd_per_hour: float | None = bounded(None, ge=0, description="Reference on-demand price of one GPU, USD per "
                                             "hour; None where no dated, attributable price was found.")
    price_source: str = ""
    price_date: str = ""
    price_alternatives: list[str] = bounded(default_factory=list)
    bf16: bool = bounded(True, description="Whether the GPU supports bf16; if not, training runs in fp16.")
    uncertain: list[str] = bounded(default_factory=list, description="Fields whose value is not confirmed by a primary source.")
    notes: str = ""
    source: str
    date: str

    @property
    def price_dated(self) -> str:
        """When the price was taken (price_date; the entry's date, that of its specifications, where none is given)."""
        return self.price_date or self.date

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops_bf16 * 1e12

    @property
    def usable_memory_gib(self) -> float:
        """What a training process can allocate: the device's memory less the CUDA context."""
        return self.memory_gib - self.cuda_context_gib

    @property
    def host_bandwidth(self) -> float:
        """Host link bytes/s (PCIE_GEN4_X16_GBS where the catalog gives none)."""
        return (self.host_link_gbs or PCIE_GEN4_X16_GBS) * 1e9


# The CUDA context lives inside total_memory but outside PyTorch's allocator: "the currently used ~300MB ... Starting
# with 11.7 CUDA implemented lazy kernel/module loading" (ptrblck, pytorch/pytorch#107667, 2023-08); NCCL and cuBLAS
# add workspaces on top (vLLM's profiler on an H100: non-torch memory 1.79 GiB at TP=1, vllm-project/vllm PR #10511).
# Each Gpu carries 0.5 GiB by default (cuda_context_gib); the estimate's overhead covers the workspaces.
CUDA_CONTEXT_SOURCE = "ptrblck, pytorch/pytorch#107667 (2023-08): ~300 MB with lazy loading (CUDA >= 11.7)"
# PCIe 4.0 x16: 16 GT/s x 16 lanes, 128b/130b: 31.5 GB/s per direction (PCI-SIG PCIe 4.0 specification).
PCIE_GEN4_X16_GBS = 32.0


@record
class ModelArch:
    """A decoder-only transformer, dense or mixture-of-experts, with the field names of a Hugging Face config.json.

    advisor.arch.describe turns it into modules and shapes by model_type; fields left out take the transformers config
    class's default for that model_type (advisor.arch.HF_CONFIG_DEFAULTS), as AutoConfig would.
    """

    name: str = "custom"
    hub_id: str | None = None
    model_type: str = "llama"
    hidden_size: int = bounded(gt=0)
    intermediate_size: int = bounded(gt=0)
    num_hidden_layers: int = bounded(gt=0)
    num_attention_heads: int = bounded(gt=0)
    num_key_value_heads: int | None = bounded(None, gt=0)
    head_dim: int | None = bounded(None, gt=0)
    vocab_size: int = bounded(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    # mixture of experts (names as each family's config spells them)
    num_local_experts: int | None = bounded(None, ge=0, description="Routed experts per MoE layer (Mixtral, gpt-oss, Llama 4).")
    num_experts: int | None = bounded(None, ge=0, description="Routed experts per MoE layer (Qwen-MoE).")
    num_experts_per_tok: int | None = bounded(None, gt=0, description="Experts each token is routed to (top-k).")
    moe_intermediate_size: int | None = bounded(None, gt=0, description="One expert's MLP width (Qwen-MoE).")
    decoder_sparse_step: int | None = bounded(None, gt=0, description="Qwen-MoE: every n-th layer is MoE.")
    mlp_only_layers: tuple[int, ...] | None = bounded(None, description="Qwen-MoE: layers kept dense.")
    intermediate_size_mlp: int | None = bounded(None, gt=0, description="Llama 4: MLP width of its dense layers.")
    interleave_moe_layer_step: int | None = bounded(None, gt=0, description="Llama 4: every n-th layer is MoE.")
    moe_layers: tuple[int, ...] | None = bounded(None, description="Llama 4: the MoE layers, when listed.")
    router_aux_loss_coef: float | None = bounded(None, ge=0, description="Weight of the load-balancing loss.")
    # attention variants
    sliding_window: int | None = bounded(None, gt=0, description="Window of sliding-window attention layers.")
    layer_types: tuple[str, ...] | None = bounded(None, description="Per layer: full_attention or sliding_attention.")
    sliding_window_pattern: int | None = bounded(None, gt=0, description="Gemma 3 (older configs): every n-th layer is full.")
    attn_logit_softcapping: float | None = bounded(None, gt=0, description="Gemma 2: attention logits soft-capped at this.")
    final_logit_softcapping: float | None = bounded(None, gt=0, description="Gemma 2/3: output logits soft-capped at this.")
    query_pre_attn_scalar: int | None = bounded(None, gt=0, description="Gemma: attention scaled by this^-0.5.")
    vision_encoder_params: int | None = bounded(None, ge=0, description=(
        "A multimodal checkpoint's vision encoder and projector (advisor.params.vision_encoder_params): weights a "
        "text fine-tune through AutoModelForCausalLM does not load. None: the checkpoint has none, or see "
        "vision_model_type."))
    vision_model_type: str | None = bounded(None, description=(
        "model_type of the checkpoint's vision encoder when it has one; set with vision_encoder_params None, it is "
        "one advisor does not count."))
    published_params: int | None = None
    published_total: float | None = bounded(None, gt=0, description="Total parameters as the source rounds them.")
    published_active: float | None = bounded(None, gt=0, description="Active parameters per token as the source gives them.")
    pretraining_tokens: float | None = bounded(None, description="Tokens the base model was pretrained on, where published.")
    source: str = ""
    date: str = ""

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise RecordError(("model_type",), str(unsupported(self.model_type)))

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim_resolved(self) -> int:
        return config_value(self, "head_dim") or self.hidden_size // self.num_attention_heads

    @property
    def qkv_bias(self) -> bool:
        # Qwen2 hard-codes bias on q/k/v (and not on o); Llama's `attention_bias` puts it on all four.
        return self.model_type == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.model_type != "qwen2" and self.attention_bias

    def hf_config_dict(self) -> dict:
        """The fields a transformers config class takes, to build this architecture for real (the same values
        advisor.arch counts with)."""
        keys = (
            "model_type hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads "
            "head_dim vocab_size tie_word_embeddings max_position_embeddings rope_theta rms_norm_eps"
        ).split()
        out = {k: getattr(self, k) for k in keys}
        out["num_key_value_heads"] = self.kv_heads
        out["head_dim"] = self.head_dim_resolved
        if self.model_type in ("llama",):
            out["attention_bias"] = self.attention_bias
            out["mlp_bias"] = self.mlp_bias
        elif self.model_type in _ATTENTION_BIAS_TYPES:
            out["attention_bias"] = self.attention_bias
        if self.model_type == "phi3" and self.vocab_size <= 32000:
            out["pad_token_id"] = None  # Phi3Config's default pad id (32000) must lie inside a small vocabulary
        for key in _ARCH_EXTRA_FIELDS:
            value = config_value(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


_ATTENTION_BIAS_TYPES = ("qwen3", "qwen3_moe", "gemma2", "gemma3_text", "gpt_oss", "llama4_text")
_ARCH_EXTRA_FIELDS = ("num_local_experts num_experts num_experts_per_tok moe_intermediate_size decoder_sparse_step "
                      "mlp_only_layers intermediate_size_mlp interleave_moe_layer_step moe_layers router_aux_loss_coef "
                      "sliding_window layer_types sliding_window_pattern attn_logit_softcapping final_logit_softcapping "
                      "query_pre_attn_scalar").split()


@record
class ApiPrice:
    """A hosted model's list price per million tokens, dated; retired models are marked (never the default)."""

    name: str
    vendor: str
    input_usd_per_mtok: float = bounded(ge=0)
    output_usd_per_mtok: float = bounded(ge=0)
    source: str
    date: str
    url: str | None = None
    quote: str | None = bounded(None, description="The price line as the source printed it.")
    retired: bool = bounded(False, description="Shut down, or deprecated with a shutdown date announced.")
    shutdown_date: str | None = None
    retired_source: str | None = None

    @property
    def price_dated(self) -> str:
        """When the price was taken: the entry's date."""
        return self.date


# A catalog price older than this is flagged wherever it is used: cloud GPU and API list prices move within a year
# (both catalogs' 2024 entries had changed or been retired by 2026).
STALE_PRICE_MONTHS = 12


def entry_date(text: str) -> datetime.date | None:
    """The date an entry's `date` starts with: YYYY-MM-DD, YYYY-MM (its first day) or YYYY (January 1st, the
    conservative reading); None when it starts with none of these."""
    m = re.match(r"\s*(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", text or "")
    if not m:
        return None
    try:
        return datetime.date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        return None


def price_is_stale(date_text: str, today: datetime.date | None = None) -> bool:
    """Policy: a price is stale once STALE_PRICE_MONTHS whole months have passed since its date, or when undated."""
    when, today = entry_date(date_text), today or datetime.date.today()
    if when is None:
        return True
    months = (today.year - when.year) * 12 + (today.month - when.month) - (today.day < when.day)
    return months >= STALE_PRICE_MONTHS


def entry_price_stale(entry, today: datetime.date | None = None) -> bool | None:
    """Whether a GPU's or API model's price is stale (price_is_stale of its price_dated); None for a GPU listed
    without a price, which has none to date."""
    if getattr(entry, "price_usd_per_hour", 0.0) is None:
        return None
    return price_is_stale(entry.price_dated, today)


Kind = Literal["gpus", "models", "apis"]
_SCHEMAS = {"gpus": Gpu, "models": ModelArch, "apis": ApiPrice}


def _read_entries(path: Path, kind: Kind) -> list:
    import yaml  # only for user catalogs and a shipped YAML newer than its prebuilt JSON
    _YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's C parser when PyYAML was built with it
    try:
        raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise AdvisorError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AdvisorError(f"{path}: expected a YAML list of {kind} entries")
    out = []
    for number, entry in enumerate(raw, 1):
        try:
            out.append(parse(_SCHEMAS[kind], entry))
        except RecordError as exc:
            name = f" ({entry['name']})" if isinstance(entry, dict) and isinstance(entry.get("name"), str) else ""
            raise AdvisorError(f"{path}: entry {number}{name}: {exc}") from None
    return out


def yaml_digest(text: str) -> str:
    """A checksum of a shipped YAML, to tell whether its prebuilt JSON is current: CRC-32, which detects an edit as
    surely as this needs (not a security check) without hashlib's OpenSSL import on every start."""
    return f"{zlib.crc32(text.encode()):08x}"


def prebuilt(kind: Kind) -> dict:
    """The prebuilt form of a shipped catalog (advisor/data/KIND.json, written by scripts/build_catalogs.py): the
    YAML's entries validated and dumped, with the digest of the YAML they came from."""
    yaml_text = (DATA_DIR / f"{kind}.yaml").read_text()
    entries = [to_json(e) for e in _read_entries(DATA_DIR / f"{kind}.yaml", kind)]
    return {"yaml_crc32": yaml_digest(yaml_text), "entries": entries}


def _shipped_entries(kind: Kind) -> list:
    """Shipped entries from the prebuilt JSON when it was built from the YAML as it is now (digest): parsing JSON and
    constructing already-validated entries skips YAML parsing and validation, most of `recommend`'s start-up.
    Otherwise (the YAML was edited since) from the YAML itself."""
    yaml_path, json_path = DATA_DIR / f"{kind}.yaml", DATA_DIR / f"{kind}.json"
    try:
        built = json.loads(json_path.read_text())
    except (OSError, ValueError):
        built = None
    if not built or built.get("yaml_crc32") != yaml_digest(yaml_path.read_text()):
        return _read_entries(yaml_path, kind)
    schema = _SCHEMAS[kind]
    tuples = [f.name for f in dataclasses.fields(schema) if "tuple" in str(f.type)]
    out = []
    try:
        for raw in built["entries"]:
            for name in tuples:
                if isinstance(raw.get(name), list):
                    raw[name] = tuple(raw[name])
            out.append(construct(schema, raw))  # validated when the JSON was built (scripts/build_catalogs.py)
    except TypeError:  # built by a version whose fields differ: the YAML itself is the truth
        return _read_entries(yaml_path, kind)
    return out


@functools.cache
def load(kind: Kind) -> dict:
    """All entries of one catalog by lower-cased name (and alias); a user file's entries override shipped ones."""
    entries = _shipped_entries(kind)
    user_file = user_config_dir() / f"{kind}.yaml"
    if user_file.is_file():
        entries += _read_entries(user_file, kind)
    by_name: dict = {}
    for entry in entries:
        replaced = by_name.get(entry.name.lower())
        keys = [entry.name, *getattr(entry, "aliases", [])]
        if replaced is not None:  # an override answers to every name of the entry it replaces
            keys += [k for k, v in by_name.items() if v is replaced]
        for key in keys:
            by_name[key.lower()] = entry
    return by_name


def entries(kind: Kind) -> list:
    """Unique entries of a catalog, in file order."""
    seen, out = set(), []
    for entry in load(kind).values():
        if entry.name not in seen:
            seen.add(entry.name)
            out.append(entry)
    return out


def _lookup(kind: Kind, name: str, what: str):
    table = load(kind)
    entry = table.get(name.strip().lower())
    if entry is None:
        names = [e.name for e in entries(kind)]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise AdvisorError(f"unknown {what} {name!r}{hint}; known: {', '.join(names)}")
    return entry


def get_gpu(name: str) -> Gpu:
    return _lookup("gpus", name, "GPU")


def get_api(name: str) -> ApiPrice:
    return _lookup("apis", name, "API")


def get_model(name_or_path: str) -> ModelArch:
    """A model by catalog name or hub id, a local config.json (file or the directory holding it), or a hub id
    `org/name` found in the local Hugging Face cache or, when online, fetched from the hub (config.json only)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.suffix == ".json" or path.is_file():
        return model_from_config_json(path)
    table = load("models")
    key = name_or_path.strip().lower()
    if key in table:
        return table[key]
    by_hub = {e.hub_id.lower(): e for e in table.values() if e.hub_id}
    if key in by_hub:
        return by_hub[key]
    if hub.looks_like_hub_id(name_or_path):
        return model_from_config_json(hub.config_path(name_or_path.strip()), name=name_or_path.strip())
    return _lookup("models", name_or_path, "model")


def model_from_config_json(path: Path, name: str | None = None) -> ModelArch:
    """Read the shape fields of a Hugging Face config.json (the language model's, for multimodal wrappers that nest
    it under text_config or llm_config); fields it leaves out take the transformers defaults for its model_type."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AdvisorError(f"{path}: no such file (expected a catalog model name or a config.json path)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AdvisorError(f"{path}: cannot read a JSON config ({exc})") from None
    if not isinstance(raw, dict):
        raise AdvisorError(f"{path}: expected a JSON object with Hugging Face config fields")
    vision = raw.get("vision_config") if isinstance(raw.get("vision_config"), dict) else None
    for key in NESTED_CONFIG_KEYS:  # multimodal configs keep the language model's shape here
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise AdvisorError(f"{path}: {unsupported(model_type)}")
    fields = {**HF_CONFIG_DEFAULTS[model_type], **{k: v for k, v in raw.items() if v is not None}}
    names = {f.name for f in dataclasses.fields(ModelArch)}
    known = {k: v for k, v in fields.items() if k in names and k not in ("name", "source", "date")}
    if vision is not None:
        from advisor.params import vision_encoder_params
        known["vision_model_type"] = str(vision.get("model_type") or "unknown")
        known["vision_encoder_params"] = vision_encoder_params(vision, int(fields.get("hidden_size") or 0))
    try:
        return parse(ModelArch, {"name": name or str(path), **known, "source": str(path)})
    except RecordError as exc:
        field = ".".join(map(str, exc.loc))
        raise AdvisorError(f"{path}: field {field}: {exc.msg} (a decoder config needs hidden_size, "
                           "intermediate_size, num_hidden_layers, num_attention_heads, vocab_size)") from None


def match_gpu(device_name: str, memory_gib: float) -> Gpu | None:
    """The catalog entry for a CUDA device name such as 'NVIDIA H100 80GB HBM3' (None if not catalogued)."""
    name = device_name.upper().replace("NVIDIA", "").replace("GEFORCE", "").strip()
    rules = [("GB200", "GB200"), ("B200", "B200"), ("H200", "H200"),
             ("H100", "H100-NVL" if "NVL" in name else "H100-PCIe" if "PCIE" in name else "H100-SXM"),
             ("A100", "A100-80GB" if memory_gib > 60 else "A100-40GB"), ("L40S", "L40S"), ("L40", "L40"),
             ("A10G", "A10G"), ("RTX 6000 ADA", "RTX-6000-Ada"), ("RTX A6000", "RTX-A6000"), ("5090", "RTX-5090"),
             ("4090", "RTX-4090"), ("3090", "RTX-3090"), ("MI325X", "MI325X"), ("MI300X", "MI300X"), ("L4", "L4"),
             ("T4", "T4"), ("V100", "V100-32GB" if memory_gib > 20 else "V100-16GB")]
    for needle, entry in rules:
        if needle in name:
            return load("gpus").get(entry.lower())
    return None
