"""Catalogs of GPUs, model architectures and API prices: shipped YAML, overridable by a user file."""


import datetime
import difflib
import functools
import json
import os
import re
import zlib
from pathlib import Path
from typing import Generic, Literal, TypeVar

import msgspec

from advisor.catalog.arch import (
    HF_CONFIG_DEFAULTS, NESTED_CONFIG_KEYS, SUPPORTED_MODEL_TYPES, unsupported, vision_encoder_params,
)
from advisor.catalog import hub
from advisor.core.convert import InputError, convert, to_json
from advisor.core.errors import AdvisorError
from advisor.catalog.types import ApiPrice, Gpu, ModelArch

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
    from advisor.core.yaml_keys import UniqueKeyLoader
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AdvisorError(f"{path}: not valid YAML{where} ({problem})") from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AdvisorError(f"{path}: expected a YAML list of {kind} entries")
    out = []
    for number, entry in enumerate(raw, 1):
        try:
            out.append(convert(_SCHEMAS[kind], entry))
        except InputError as exc:
            name = f" ({entry['name']})" if isinstance(entry, dict) and isinstance(entry.get("name"), str) else ""
            raise AdvisorError(f"{path}: entry {number}{name}: {exc}") from None
        earlier = next((i for i, e in enumerate(out[:-1], 1) if e.name.lower() == out[-1].name.lower()), None)
        if earlier is not None:  # the later entry would replace the earlier one in silence
            raise AdvisorError(f"{path}: entry {number}: name {out[-1].name!r} is also entry {earlier}'s: give each "
                               "entry once")
    return out


def yaml_digest(text: str) -> str:
    """A checksum of a shipped YAML, to tell whether its prebuilt JSON is current: CRC-32, which detects an edit as
    surely as this needs (not a security check) without hashlib's OpenSSL import on every start."""
    return f"{zlib.crc32(text.encode()):08x}"


def prebuilt(kind: Kind) -> dict:
    """The prebuilt form of a shipped catalog (advisor/catalog/data/KIND.json, written by scripts/build_catalogs.py): the
    YAML's entries validated and dumped, with the digest of the YAML they came from."""
    yaml_text = (DATA_DIR / f"{kind}.yaml").read_text()
    entries = [to_json(e) for e in _read_entries(DATA_DIR / f"{kind}.yaml", kind)]
    return {"yaml_crc32": yaml_digest(yaml_text), "entries": entries}


Entry = TypeVar("Entry", Gpu, ModelArch, ApiPrice)


class Prebuilt(msgspec.Struct, Generic[Entry]):
    """A shipped catalog's prebuilt JSON (`prebuilt`): the digest of the YAML it was built from, and its entries."""

    yaml_crc32: str
    entries: list[Entry]


def _shipped_entries(kind: Kind) -> list:
    """Shipped entries from the prebuilt JSON when it was built from the YAML as it is now (digest): msgspec decodes
    and checks it straight into entries, which skips parsing the YAML, most of `recommend`'s start-up.
    Otherwise (the YAML was edited since, or the JSON was written by a version whose fields differ) from the YAML
    itself."""
    yaml_path, json_path = DATA_DIR / f"{kind}.yaml", DATA_DIR / f"{kind}.json"
    try:
        # the entry schema is picked at run time; msgspec builds the decoder for Prebuilt of it
        built = msgspec.json.decode(json_path.read_bytes(), type=Prebuilt[_SCHEMAS[kind]])  # pyright: ignore[reportInvalidTypeForm, reportGeneralTypeIssues]
    except (OSError, msgspec.DecodeError):  # msgspec.ValidationError is a DecodeError
        built = None
    if built is None or built.yaml_crc32 != yaml_digest(yaml_path.read_text()):
        return _read_entries(yaml_path, kind)
    return built.entries


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
        from advisor.catalog import counted
        if not counted.requested():
            raise AdvisorError(f"{path}: {unsupported(model_type)}")
        return _counted_model(raw, path, name)
    fields = {**HF_CONFIG_DEFAULTS[model_type], **{k: v for k, v in raw.items() if v is not None}}
    names = set(ModelArch.__struct_fields__)
    known = {k: v for k, v in fields.items() if k in names and k not in ("name", "source", "date")}
    if vision is not None:
        known["vision_model_type"] = str(vision.get("model_type") or "unknown")
        known["vision_encoder_params"] = vision_encoder_params(vision, int(fields.get("hidden_size") or 0))
    try:
        return convert(ModelArch, {"name": name or str(path), **known, "source": str(path)})
    except InputError as exc:
        field = ".".join(map(str, exc.loc))
        if not field:  # a rule across fields (ModelArch.__post_init__): its message names them
            raise AdvisorError(f"{path}: {exc.msg}") from None
        raise AdvisorError(f"{path}: field {field}: {exc.msg} (a decoder config needs hidden_size, "
                           "intermediate_size, num_hidden_layers, num_attention_heads, vocab_size)") from None


def _counted_model(raw: dict, path: Path, name: str | None) -> ModelArch:
    """A model_type the advisor does not describe, counted through transformers' model code on the meta device
    (advisor.catalog.counted; asked for with its COUNT_ENV)."""
    from advisor.catalog.arch import COUNTED_MODEL_TYPES, mark_lora_unverified, register_counted
    from advisor.catalog.counted import count_architecture, peft_layout
    architecture, fields = count_architecture(raw, str(path))
    COUNTED_MODEL_TYPES.add(fields["model_type"])
    try:
        model = convert(ModelArch, {"name": name or str(path), **fields, "source": f"{path} (counted through transformers)"})
    except InputError as exc:
        raise AdvisorError(f"{path}: {'field ' + '.'.join(map(str, exc.loc)) + ': ' if exc.loc else ''}{exc.msg}") from None
    checked = peft_layout(architecture, raw, str(path))
    register_counted(model, checked or architecture)
    if checked is None:
        mark_lora_unverified(model)
    return model


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
