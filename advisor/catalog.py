"""Catalogs of GPUs, model architectures and API prices: shipped YAML, overridable by a user file."""

import difflib
import functools
import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from advisor.errors import AdvisorError

DATA_DIR = Path(__file__).parent / "data"
# libyaml's C parser when PyYAML was built with it: parsing the catalogs is most of `recommend`'s work.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def user_config_dir() -> Path:
    """Where user catalogs and calibration live: $RIGHTSIZE_CONFIG_DIR, else $XDG_CONFIG_HOME/rightsize."""
    if os.environ.get("RIGHTSIZE_CONFIG_DIR"):
        return Path(os.environ["RIGHTSIZE_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "rightsize"


class Gpu(BaseModel):
    """One GPU type: what the estimators need to turn FLOPs and bytes into hours, dollars and GPU counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    aliases: list[str] = []
    memory_gib: float = Field(gt=0, description="Device memory in GiB (2^30 bytes) as the device reports it: "
                              "torch.cuda.get_device_properties().total_memory (cudaDeviceProp.totalGlobalMem), which "
                              "is a few hundred MiB below nvidia-smi's total.")
    memory_reported: bool = Field(True, description="memory_gib is a published device-reported figure (memory_source "
                                                   "quotes it); false: a conversion of the marketing figure.")
    memory_source: str = Field("", description="Where memory_gib comes from (deviceQuery, a torch OOM message, ...).")
    memory_nvidia_smi_mib: float | None = Field(None, description="nvidia-smi's total, MiB (informational).")
    cuda_context_gib: float = Field(0.5, ge=0, description="Device memory the CUDA context (driver, lazily loaded "
                                    "kernels) takes outside PyTorch's allocator; see CUDA_CONTEXT_SOURCE.")
    peak_tflops_bf16: float = Field(gt=0, description="Dense bf16 (or fp16 where bf16 is absent) tensor-core peak, TFLOP/s.")
    memory_bandwidth_gbs: float = Field(gt=0, description="Memory bandwidth, GB/s.")
    interconnect: str = Field("", description="The GPU-to-GPU link inside a node.")
    interconnect_gbs: float | None = Field(None, gt=0, description="GPU-to-GPU bandwidth per GPU per direction, GB/s "
                                           "(NVLink datasheet figures are bidirectional and are halved).")
    interconnect_source: str = ""
    host_link_gbs: float | None = Field(None, gt=0, description="Host (CPU) link per GPU per direction, GB/s: what "
                                        "CPU offload moves weights and states over. None: PCIe Gen4 x16.")
    price_usd_per_hour: float | None = Field(None, ge=0, description="Reference on-demand price of one GPU, USD per "
                                             "hour; None where no dated, attributable price was found.")
    price_source: str = ""
    price_date: str = ""
    price_alternatives: list[str] = []
    bf16: bool = Field(True, description="Whether the GPU supports bf16; if not, training runs in fp16.")
    uncertain: list[str] = Field([], description="Fields whose value is not confirmed by a primary source.")
    notes: str = ""
    source: str
    date: str

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


class ModelArch(BaseModel):
    """A dense decoder-only transformer, described with the field names of a Hugging Face config.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "custom"
    hub_id: str | None = None
    model_type: str = "llama"
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(None, gt=0)
    head_dim: int | None = Field(None, gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    published_params: int | None = None
    pretraining_tokens: float | None = Field(None, description="Tokens the base model was pretrained on, where published.")
    source: str = ""
    date: str = ""

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim_resolved(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def qkv_bias(self) -> bool:
        # Qwen2 hard-codes bias on q/k/v (and not on o); Llama's `attention_bias` puts it on all four.
        return self.model_type == "qwen2" or self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.model_type != "qwen2" and self.attention_bias

    def hf_config_dict(self) -> dict:
        """The fields a transformers config class takes, to build this architecture for real."""
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
        return out


class ApiPrice(BaseModel):
    """A hosted model's list price per million tokens, dated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    vendor: str
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    source: str
    date: str


Kind = Literal["gpus", "models", "apis"]
_SCHEMAS = {"gpus": Gpu, "models": ModelArch, "apis": ApiPrice}


def _read_entries(path: Path, kind: Kind) -> list:
    try:
        raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise AdvisorError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AdvisorError(f"{path}: expected a YAML list of {kind} entries")
    try:
        return [_SCHEMAS[kind].model_validate(entry) for entry in raw]
    except ValidationError as exc:
        err = exc.errors()[0]
        raise AdvisorError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


@functools.cache
def load(kind: Kind) -> dict:
    """All entries of one catalog by lower-cased name (and alias); a user file's entries override shipped ones."""
    entries = _read_entries(DATA_DIR / f"{kind}.yaml", kind)
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
    """A catalog model by name, or a local Hugging Face config.json (file or the directory holding it)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.suffix == ".json" or path.is_file():
        return model_from_config_json(path)
    return _lookup("models", name_or_path, "model")


def model_from_config_json(path: Path) -> ModelArch:
    """Read the shape fields of a Hugging Face config.json; other fields are ignored."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AdvisorError(f"{path}: no such file (expected a catalog model name or a config.json path)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AdvisorError(f"{path}: cannot read a JSON config ({exc})") from None
    if not isinstance(raw, dict):
        raise AdvisorError(f"{path}: expected a JSON object with Hugging Face config fields")
    raw = raw.get("text_config", raw)  # multimodal configs keep the language model's shape here
    known = {k: v for k, v in raw.items() if k in ModelArch.model_fields and k not in ("name", "source")}
    try:
        return ModelArch.model_validate({"name": str(path), **known, "source": str(path)})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"]))
        raise AdvisorError(f"{path}: field {field}: {err['msg']} (a dense decoder config needs hidden_size, "
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
