"""Where examples come from besides one local file: hub datasets from the local cache (offline), several datasets
mixed with weights, and the columns each format reads."""

import math
from pathlib import Path

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def format_columns(data: DataSection) -> list[str]:
    """The fields data.format reads (the instruction's input field is optional)."""
    return {"text": [data.text_field], "instruction": [data.instruction_field, data.input_field, data.output_field],
            "chat": [data.messages_field], "sharegpt": [data.conversations_field],
            "completion": [data.prompt_field, data.completion_field]}[data.format]


def hub_snapshot(dataset_id: str) -> Path:
    """The folder of a hub dataset in the local Hugging Face cache (HF_HUB_CACHE), without touching the network."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(dataset_id, repo_type="dataset", local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise AdvisorError(f"data.path {dataset_id} (hub: true) is not in the local hub cache ({type(exc).__name__}): "
                           f"download it once with `hf download --repo-type dataset {dataset_id}`, or point data.path "
                           "at a local copy") from None


def split_files(folder: Path, split: str) -> list[Path]:
    """The data files of one split in a dataset repository: files or folders named for the split, else all of them."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    named = [p for p in files if split in p.relative_to(folder).as_posix().replace("-", "/").replace("_", "/").split("/")
             or p.stem.startswith(split)]
    return named or files


def read_hub(dataset_id: str, split: str):
    """A hub dataset's split from the local cache: a save_to_disk folder, or its parquet/JSON/CSV files."""
    import datasets
    folder = hub_snapshot(dataset_id)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        loaded = datasets.load_from_disk(str(folder))
        return pick_split(loaded, split, dataset_id)
    files = split_files(folder, split)
    if not files:
        raise AdvisorError(f"data.path {dataset_id} (hub: true): no data files ({', '.join(DATA_SUFFIXES)}) in {folder}")
    kinds = {DATA_SUFFIXES[f.suffix.lower()] for f in files}
    if len(kinds) > 1:
        raise AdvisorError(f"data.path {dataset_id} (hub: true): split {split!r} mixes file types {sorted(kinds)}")
    return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")


def pick_split(loaded, split: str, where: str):
    """One split of a DatasetDict (a Dataset is its own split)."""
    import datasets
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split not in loaded:
        raise AdvisorError(f"{where}: no split {split!r} (splits: {', '.join(str(name) for name in loaded)}); set data.split")
    return loaded[split]


def weighted(dataset, weight: float, seed: int):
    """Each example used `weight` times: whole copies, then a seeded random share for the fraction."""
    n = len(dataset)
    whole, fraction = int(weight), weight - int(weight)
    indices = [i for _ in range(whole) for i in range(n)]
    if fraction > 0:
        import random
        indices += sorted(random.Random(seed).sample(range(n), math.floor(n * fraction)))
    return dataset if indices == list(range(n)) else dataset.select(indices)


def mixed(datasets_and_weights: list, data: DataSection, seed: int):
    """The datasets weighted and concatenated, keeping only the columns the format reads (so their other fields may
    differ)."""
    import datasets
    parts = []
    for k, (dataset, weight) in enumerate(datasets_and_weights):
        keep = [c for c in format_columns(data) if c in dataset.column_names]
        parts.append(weighted(dataset.select_columns(keep), weight, seed + k))
    if len(parts) == 1:
        return parts[0]
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as exc:
        raise AdvisorError(f"data.mix: the datasets' {', '.join(format_columns(data))} fields differ in type ({exc})") from None


def source_files(data: DataSection) -> list[Path]:
    """Every local file behind the recipe's data (training, mixed-in, eval; hub datasets in the cache), for the
    tokenized-data fingerprint."""
    roots = [hub_snapshot(data.path) if data.hub else Path(data.path)]
    roots += [hub_snapshot(s.path) if s.hub else Path(s.path) for s in data.mix]
    roots += [Path(data.eval_path)] if data.eval_path else []
    files = []
    for root in roots:
        files += sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return files


def load_raw(data: DataSection):
    """A datasets.Dataset from a JSONL/JSON/Parquet/CSV file or a save_to_disk directory."""
    import datasets

    path = Path(data.path)
    if not path.exists():
        raise AdvisorError(f"data.path {path}: no such file or directory")
    if path.is_dir():
        from runners.datasources import pick_split
        return pick_split(datasets.load_from_disk(str(path)), data.split, f"data.path {path}")
    kinds = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise AdvisorError(f"data.path {path}: unsupported file type {path.suffix!r}; use .jsonl, .json, .parquet or .csv")
    reader = {"json": datasets.Dataset.from_json, "parquet": datasets.Dataset.from_parquet, "csv": datasets.Dataset.from_csv}[kind]
    return reader(str(path), keep_in_memory=True)


def load_training_examples(data: DataSection, seed: int):
    """data.path (a file, a save_to_disk folder or a cached hub dataset) and data.mix, weighted and concatenated."""
    if not data.hub and not data.mix and data.weight == 1.0:
        return load_raw(data)
    sources = [(data.path, data.hub, data.split, data.weight)] + [(s.path, s.hub, s.split, s.weight) for s in data.mix]
    loaded = [(read_hub(path, split) if hub else load_raw(data.model_copy(update={"path": path, "split": split})), weight)
              for path, hub, split, weight in sources]
    return mixed(loaded, data, seed)
