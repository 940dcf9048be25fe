"""`python -m runners.data_probe RECIPE.yaml [--set key=value ...]`: how fast the recipe's data prepares, measured.

Prints one JSON object for `advisor estimate` (advisor.measure.data_probe): tokens per second on one core (the
tokenizer's own threads off, as in runners.prepare's rendering processes) of preparing a sample of the recipe's
training file (data.path) with the recipe's own tokenizer, through the runner's own path: the first pass that reads
and validates rows (runners.rows.row_problem), the second that reads them again, clips
(runners.examples.clip_example) and renders them in batches (runners.examples.render_packed), packed by
runners.data.Packer. The clock runs over that work only, not imports or loading the tokenizer; the rendering apart
from the rest, which runners.prepare keeps in its main process while other processes render.

Also: the sample's rows, tokens and the bytes of the file it read, so the advisor scales to the whole file in tokens
per byte instead of guessing 4 characters per token; the bytes of every source the run reads (data.path, data.mix,
data.eval_path); the tokenizer. Each result is cached under <cache>/tokenized/probes/, keyed by the data files'
identity (path, size, mtime, ctime, inode), the data settings and the tokenizer's source, so probing unchanged
inputs again loads nothing. Any failure prints {"error": "one line"} and exits 0: the advisor shows "not measured".
"""

import hashlib
import json
import sys
import os
import time
from pathlib import Path

from advisor.core.errors import AdvisorError

PROBE_FORMAT = "probe-v3"  # bump when what the probe measures changes, so older cached results are not read
SAMPLE_ROWS = 2_000        # valid rows sampled at most: enough for a steady rate, a second or so of the byte tokenizer
SAMPLE_CHARS = 4_000_000   # or this many characters of (clipped) text, whichever comes first: long rows stop it sooner


def tokenizer_source(recipe) -> str:
    """What names the recipe's tokenizer (runners.tokenizer.load_tokenizer's choice): `byte`, a path or a hub id."""
    model = recipe.model
    if model.tokenizer == "byte" or (model.tokenizer is None and (model.arch is not None or model.random_init)):
        return "byte"
    return str(model.tokenizer or model.name)


def _refuse_uncached_hub_tokenizer(source: str) -> None:
    """A hub tokenizer not in the local cache, said before transformers loads (seconds): the probe never downloads."""
    if source == "byte" or Path(source).expanduser().exists():
        return
    from huggingface_hub import try_to_load_from_cache
    try:
        found = try_to_load_from_cache(source, "tokenizer_config.json")
    except Exception:  # noqa: BLE001 - an id that is not a repository name: load_tokenizer says why
        return
    if not isinstance(found, str):
        raise AdvisorError(f"tokenizer {source} is not in the local hub cache (download it once: hf download {source})")


def _source_paths(source) -> list[Path]:
    """The local files of one source (a hub dataset's from the local cache, offline; AdvisorError when not cached)."""
    from runners.datasources import hub_paths
    from runners.fingerprint import data_files
    roots = hub_paths(source.path, source.split, source.key) if source.hub else [Path(source.path)]
    files: list[Path] = []
    for root in roots:
        if not root.exists():
            raise AdvisorError(f"{source.label}: no such file or directory")
        files += data_files(root)
    return files


def _identities(paths: list[Path]) -> list[str]:
    from runners.fingerprint import _identity
    return [_identity(p) for p in paths]


def _tokenizer_files(source: str) -> list[Path]:
    """A local tokenizer folder's files (their identity joins the key: an edited tokenizer is measured again)."""
    local = Path(source).expanduser()
    if source == "byte" or not local.exists():
        return []
    return sorted(p for p in local.iterdir() if p.is_file()) if local.is_dir() else [local]


def probe_key(recipe, files_by_source: dict[str, list[Path]]) -> str:
    """The cached result's key: every data file's identity, every data setting, the tokenizer's source (and its local
    files' identity), the probe's format."""
    source = tokenizer_source(recipe)
    parts = [PROBE_FORMAT, recipe.data.model_dump(mode="json"), source, _identities(_tokenizer_files(source)),
             {key: _identities(paths) for key, paths in files_by_source.items()}]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class _Packed:
    """runners.data.Packer (in memory) with the count of examples packed: what the packed cache will hold."""

    def __init__(self, seq_len: int, packing: bool):
        from runners.data import Packer
        self.packer, self.examples = Packer(seq_len, packing), 0

    def add(self, batch, index: int, start: int) -> None:
        """The index-th example of a rendered batch (runners.examples.render_packed), left out without a loss token."""
        if batch.has_loss[index]:
            self.packer.add_rendered(batch, index, index + 1, start)
            self.examples += 1

    @property
    def tokens(self) -> int:
        return self.packer.flushed_tokens + len(self.packer.ids)

    @property
    def packed_rows(self) -> int:
        return len(self.packer.offsets) - 1 + bool(self.packer.row_length)


class _Clock:
    """Seconds spent on the main process's share (reading, validating, clipping, packing: what runners.prepare keeps
    in its main process) and on rendering (what its processes share)."""

    def __init__(self):
        self.serial, self.render = 0.0, 0.0


def _prepare_sample(source, data, tokenizer, max_chars: int, clock: _Clock) -> tuple[_Packed, int, str | None, bool]:
    """The runner's two passes over the first rows of `source`, on SAMPLE_ROWS valid rows or SAMPLE_CHARS characters:
    (packed, valid rows, where the last row read is, whether the whole source was read), timed on `clock`."""
    from runners.examples import RENDER_BATCH, clip_example, render_packed, text_chars
    from runners.rows import iter_source_rows, row_problem
    good, chars, last_where, whole = [], 0, None, True
    start = time.perf_counter()
    for index, (where, example, problem) in enumerate(iter_source_rows(source)):  # pass 1: read and validate
        last_where = where
        if problem or row_problem(example, data):
            continue
        good.append(index)
        chars += text_chars(clip_example(example, data, max_chars))
        if len(good) >= SAMPLE_ROWS or chars >= SAMPLE_CHARS:
            whole = False
            break
    if not good:
        raise AdvisorError(f"{source.label}: no valid {data.format} row in the sample (advisor validate says why)")
    packed, wanted, pending = _Packed(data.seq_len, data.packing), set(good), []

    def flush():
        begin = time.perf_counter()
        batch = render_packed(pending, data, tokenizer)  # what runners.prepare's rendering processes do
        clock.render += time.perf_counter() - begin
        offset = 0
        for i, n in enumerate(batch.lengths):
            packed.add(batch, i, offset)
            offset += n
        pending.clear()

    for index, (_, example, _) in enumerate(iter_source_rows(source)):  # pass 2: read again, clip, render, pack
        if index > good[-1]:
            break
        if index in wanted:
            pending.append(clip_example(example, data, max_chars))
            if len(pending) == RENDER_BATCH:
                flush()
    if pending:
        flush()
    clock.serial = time.perf_counter() - start - clock.render
    return packed, len(good), last_where, whole


def _bytes_read(path: Path, where: str | None, whole: bool) -> int | None:
    """Bytes of the file the sample covers: all of it when read to the end; the first N lines of a line-based file
    (JSON lines, CSV) when the sample stopped at `line N`; None otherwise (Parquet, Arrow: not proportional)."""
    if whole:
        return path.stat().st_size
    if where is None or not where.split()[-2:-1] == ["line"] or path.suffix.lower() not in (".jsonl", ".json", ".csv"):
        return None
    last, total = int(where.split()[-1]), 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            total += len(raw)
            if number >= last:
                break
    return total


def measure(recipe, recipe_path: Path) -> dict:
    """The probe's answer (see the module doc); a cached one when the inputs did not change."""
    from runners.datasources import data_sources
    from runners.environment import cache_root
    from runners.io import atomic_write_text

    sources = data_sources(recipe.data)
    files = {s.key: _source_paths(s) for s in sources}
    key = probe_key(recipe, files)
    entry = cache_root() / "tokenized" / "probes" / f"{key}.json"
    try:
        return json.loads(entry.read_text()) | {"cached": True, "cache_file": str(entry)}
    except (OSError, ValueError):
        pass
    _refuse_uncached_hub_tokenizer(tokenizer_source(recipe))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core's rate, as in runners.prepare's rendering processes
    from runners.environment import quiet_libraries
    from runners.tokenizer import load_tokenizer, max_text_chars
    quiet_libraries()
    try:
        tokenizer = load_tokenizer(recipe)  # not timed: loading is paid once per run, not per token
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError and more for a missing tokenizer
        raise AdvisorError(f"tokenizer {tokenizer_source(recipe)} is not loadable offline ({_one_line(exc)})") from None
    max_chars = max_text_chars(tokenizer, recipe.data.seq_len)
    train = sources[0]
    clock = _Clock()
    packed, rows, where, whole = _prepare_sample(train, recipe.data, tokenizer, max_chars, clock)
    seconds = clock.serial + clock.render
    tokens = packed.tokens
    if tokens == 0:
        raise AdvisorError(f"{train.label}: no token carries loss in the sampled rows (data.seq_len, train_on_prompt)")
    train_files = files[train.key]
    sample_bytes = _bytes_read(train_files[0], where, whole) if len(train_files) == 1 else (
        sum(p.stat().st_size for p in train_files) if whole else None)
    result = {
        "tokens_per_second_per_process": tokens / max(seconds, 1e-9),
        "serial_tokens_per_second": tokens / max(clock.serial, 1e-9),
        "seconds": seconds, "render_seconds": clock.render, "sample_rows": rows, "sample_examples": packed.examples, "sample_tokens": tokens,
        "sample_packed_rows": packed.packed_rows, "sample_bytes": sample_bytes,
        "tokens_per_byte": tokens / sample_bytes if sample_bytes else None, "whole_file": whole,
        "file": str(train_files[0]) if len(train_files) == 1 else str(train.path),
        "tokenizer": tokenizer_source(recipe), "tokenizer_class": type(tokenizer).__name__,
        "sources": [{"key": s.key, "path": s.path, "bytes": sum(p.stat().st_size for p in files[s.key]),
                     "weight": s.weight, "is_eval": s.is_eval} for s in sources],
        "recipe": str(recipe_path), "format": PROBE_FORMAT,
    }
    try:
        atomic_write_text(entry, json.dumps(result))
    except OSError:
        pass  # a read-only cache only costs measuring again
    return result | {"cached": False, "cache_file": str(entry)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else ""
    return f"{type(exc).__name__}: {first}" if not isinstance(exc, AdvisorError) else first


def main(argv: list[str]) -> int:
    """Print the probe's JSON; every failure as {"error": ...} with exit code 0 (the advisor says "not measured")."""
    try:
        if not argv:
            raise AdvisorError("usage: python -m runners.data_probe RECIPE.yaml [--set key=value ...]")
        recipe_path, rest = Path(argv[0]), argv[1:]
        overrides = [rest[i + 1] for i in range(len(rest) - 1) if rest[i] == "--set"]
        from advisor.plan.recipe import load_recipe
        recipe = load_recipe(recipe_path, overrides)
        answer = measure(recipe, recipe_path)
    except (AdvisorError, Exception) as exc:  # noqa: BLE001 - one line for the advisor, never a traceback
        answer = {"error": _one_line(exc)}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
