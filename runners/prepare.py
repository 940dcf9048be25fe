"""Preparing the data once: validate, render and pack every source with all cores, streaming, into a content-keyed,
memory-mapped cache that every rank opens lazily.

- **Once, before the ranks need it.** `advisor prepare RECIPE` prepares; so does `advisor run` before torchrun
  starts several processes. A rank that finds no cache (a job started by torchrun directly) prepares it itself under
  the cache key's lock while the others wait on the lock with a message (no collective runs meanwhile, so no
  NCCL timeout can fire); whoever takes the lock after it finds the cache.
- **With all cores.** The main process reads, validates and clips rows; processes (spawned, each with the
  tokenizer) render batches of them; results come back in order, so the rows are the same for any process count.
  At most PENDING_PER_PROCESS batches per process are in flight: memory is bounded by them and the Packer's
  chunk, not by the dataset.
- **Never half-read.** The cache is written into a temporary folder named for this host and process, its index last,
  then renamed into place; an interrupted preparation leaves only that temporary folder, which is never read and
  is removed by the next preparation of the same key on this host once its process is gone.
"""

import hashlib
import json
import math
import os
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection, Recipe
from runners.data import Packer, PackedRows, TokenizedData
from runners.examples import RENDER_BATCH, RenderedBatch, clip_example, render_packed, text_chars
from runners.rows import RowProblem, SourceCheck, check_data, data_notes, iter_source_rows

CACHE_FORMAT = "rows-v4"  # bump when reading or rendering changes what the same file tokenizes to, or the layout
INDEX = "index.json"      # written last: a cache folder without it is never read

# Characters tokenized per call at most, besides RENDER_BATCH rows: the tokenizer's output costs about 200 bytes per
# token (a 10M-character row of one-character tokens took 1.96 GB of RSS), so a batch of long rows stays under
# ~0.4 GB at one character per token; a batch of 1000 typical rows (~2,000 characters) is not cut by it.
RENDER_BATCH_CHARS = 2_000_000

PENDING_PER_PROCESS = 4       # rendered batches in flight per process: keeps every process busy, memory bounded
PROGRESS_SECONDS = 10.0       # a progress line this often while preparing
WAIT_NOTICE_SECONDS = 60.0    # a process waiting for another's preparation says so this often
WAIT_LIMIT_SECONDS = 24 * 3600.0  # and gives up after this, naming the lock


def preparation_processes(requested: int | None, rows: int) -> int:
    """Processes that render: `requested` (advisor prepare --processes), else the advisor's policy (one for small
    data, else every core: advisor.plan.estimate.preparation_processes, which the estimate uses too)."""
    from advisor.plan.estimate import preparation_processes as policy
    return max(1, requested) if requested else policy(rows)


def fingerprint(recipe: Recipe, tokenizer_id: str, cache_root: Path | None = None) -> str:
    """The cache key: the content hash of every file behind the data (training, mixed-in, eval, hub datasets in the
    local cache; runners.fingerprint caches each hash by file identity, so a file is hashed once per change), every
    data setting, the tokenizer and the seed."""
    from runners.datasources import source_files
    from runners.fingerprint import data_sha256
    digest = hashlib.sha256()
    for f in source_files(recipe.data):
        digest.update(data_sha256(f, cache_root).encode())
    settings = recipe.data.model_dump(exclude={"path"})
    digest.update(json.dumps([settings, tokenizer_id, recipe.train.seed, CACHE_FORMAT], sort_keys=True).encode())
    return digest.hexdigest()[:20]


def build_dataset(recipe: Recipe, tokenizer, cache_root: Path, processes: int | None = None) -> TokenizedData:
    """The recipe's data, prepared (validated, tokenized, masked, split, packed) or opened from the cache. Every
    source (training file, data.mix, data.eval_path, hub datasets) goes through the same validator
    (runners.rows.check_data); rows that fail it or carry no loss after truncation are refused, or skipped and
    counted per source (data.on_bad_rows); a source left with no row is refused before anything trains. Each text
    is cut to a length its first data.seq_len tokens fit in before it is tokenized (runners.tokenizer.max_text_chars)."""
    from runners.tokenizer import tokenizer_identity
    folder = Path(cache_root) / "tokenized"
    key = fingerprint(recipe, tokenizer_identity(tokenizer), cache_root)
    final = folder / key
    if not (final / INDEX).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with _KeyLock(folder / f"{key}.lock"):
            if not (final / INDEX).is_file():
                _remove_abandoned(folder, key)
                if final.exists():  # a cache folder without its index (damaged by hand): never read, rebuilt
                    shutil.rmtree(final)
                _prepare(recipe, tokenizer, folder, key, processes)
                return _open(final, cache_hit=False)
    return _open(final, cache_hit=True)


def _open(final: Path, cache_hit: bool) -> TokenizedData:
    index = json.loads((final / INDEX).read_text())
    data = TokenizedData(PackedRows.open(final, "train"), PackedRows.open(final, "val"), index["train_tokens"],
                         index["examples"], cache_hit, final, index["skipped_rows"], list(index["notes"]), index)
    _say(data.notes)
    return data


class _KeyLock:
    """An exclusive flock on the cache key's lock file; a process that has to wait says what it waits for."""

    def __init__(self, path: Path):
        self.path, self.fd = path, -1

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start, said = time.monotonic(), 0.0
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= WAIT_LIMIT_SECONDS:
                    os.close(self.fd)
                    raise AdvisorError(f"waited {waited / 3600:.0f} h for another process preparing this data "
                                       f"({self.path} is locked): stop it, or remove the lock file if none runs") from None
                if waited >= said:
                    _tell(f"waiting for another process preparing this data (lock {self.path}; "
                          f"{waited:.0f} s so far)")
                    said += WAIT_NOTICE_SECONDS
                time.sleep(0.5)

    def __exit__(self, *exc):
        import fcntl
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _temporary_name(key: str) -> str:
    return f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"


def _remove_abandoned(folder: Path, key: str) -> None:
    """Temporary folders of this key left by a preparation on this host whose process is gone (killed, crashed).
    The caller holds the key's lock, so no live preparation of this key writes into them."""
    prefix = f".tmp-{key}-{socket.gethostname()}-"
    for stale in folder.glob(f"{prefix}*"):
        pid = stale.name[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prepare(recipe: Recipe, tokenizer, folder: Path, key: str, processes: int | None) -> None:
    """Build the cache into a temporary folder, index last, and rename it into place."""
    from runners.tokenizer import max_text_chars
    data_section = recipe.data
    started = time.perf_counter()
    checks = check_data(data_section, recipe.train.seed)
    training = [c for c in checks if not c.source.is_eval]
    n = sum(len(c.picks) for c in training)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.train.seed))
    split_off = data_section.val_fraction > 0 and n > 1 and not data_section.eval_path  # an eval file replaces the split
    n_val = math.ceil(n * data_section.val_fraction) if split_off else 0
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[order[:n_val].long()] = True
    del order
    temporary = folder / _temporary_name(key)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        train = Packer(data_section.seq_len, data_section.packing, temporary, "train")
        val = Packer(data_section.seq_len, data_section.packing, temporary, "val")
        total = n + sum(len(c.picks) for c in checks if c.source.is_eval)
        workers = preparation_processes(processes, total)
        progress = _Progress(total, workers)
        max_chars = max_text_chars(tokenizer, data_section.seq_len)
        kept, start = 0, 0
        with _Renderer(data_section, tokenizer, workers) as render:
            for check in checks:
                if check.source.is_eval:
                    _pack_source(check, data_section, render, max_chars, lambda _: val, 0, progress)
                    continue
                kept += _pack_source(check, data_section, render, max_chars,
                                     lambda position: val if is_val[position] else train, start, progress)
                start += len(check.picks)
        train_rows, val_rows = train.finish(), val.finish()
        seconds = time.perf_counter() - started
        tokens = train_rows.tokens + val_rows.tokens
        index = {"format": CACHE_FORMAT, "train_tokens": train_rows.tokens, "val_tokens": val_rows.tokens,
                 "train_rows": len(train_rows), "val_rows": len(val_rows), "examples": kept,
                 "skipped_rows": sum(c.bad.count for c in checks), "notes": data_notes(checks, data_section),
                 "seconds": round(seconds, 3), "processes": workers,
                 "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
                 "bytes": sum(f.stat().st_size for f in temporary.iterdir())}
        del train_rows, val_rows  # the maps of the temporary files, before the folder is renamed
        (temporary / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        try:
            os.rename(temporary, folder / key)
        except OSError:
            if not (folder / key / INDEX).is_file():  # another host on a shared cache finished the same key first
                raise
            shutil.rmtree(temporary, ignore_errors=True)
        _tell(f"prepared {tokens:,} tokens ({index['train_rows']:,} training rows) in {seconds:.1f} s: "
              f"{tokens / max(seconds, 1e-9) / 1e6:.2f}M tokens/s with {workers} process{'es' if workers > 1 else ''}; "
              f"cache {folder / key} ({index['bytes'] / 1e6:,.0f} MB)")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


class _Progress:
    """A progress line every PROGRESS_SECONDS: rows rendered of the total, tokens, tokens/s."""

    def __init__(self, rows: int, processes: int):
        self.rows, self.processes, self.done, self.tokens = rows, processes, 0, 0
        self.start = self.last = time.perf_counter()

    def add(self, batch: RenderedBatch) -> None:
        self.done += len(batch.lengths)
        self.tokens += sum(batch.lengths)
        now = time.perf_counter()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            _tell(f"preparing data: {self.done:,}/{self.rows:,} rows ({100 * self.done / max(self.rows, 1):.0f}%), "
                  f"{self.tokens:,} tokens, {self.tokens / (now - self.start) / 1e6:.2f}M tokens/s "
                  f"({self.processes} process{'es' if self.processes > 1 else ''})")


class _Renderer:
    """Renders batches of clipped examples in order: in this process, or in `processes` spawned processes with at
    most PENDING_PER_PROCESS batches each in flight. Spawned, not forked: the parent may hold torch's threads."""

    def __init__(self, data: DataSection, tokenizer, processes: int):
        self.data, self.tokenizer, self.processes, self.pool = data, tokenizer, processes, None

    def __enter__(self):
        if self.processes > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from runners.examples import start_render_process
            self.pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=start_render_process,
                                            initargs=(self.data.model_dump_json(), self.tokenizer))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, batches: Iterator[tuple[list, list[dict]]]) -> Iterator[tuple[list, RenderedBatch]]:
        """(wheres, rendered) for each (wheres, examples) of `batches`, in their order."""
        if self.pool is None:
            for wheres, examples in batches:
                yield wheres, render_packed(examples, self.data, self.tokenizer)
            return
        from runners.examples import render_in_process
        pending: deque = deque()
        for wheres, examples in batches:
            pending.append((wheres, self.pool.submit(render_in_process, examples)))
            if len(pending) >= self.processes * PENDING_PER_PROCESS:
                wheres_done, future = pending.popleft()
                yield wheres_done, future.result()
        while pending:
            wheres_done, future = pending.popleft()
            yield wheres_done, future.result()


def _increasing_runs(picks: list[int]) -> list[list[int]]:
    """Weighted picks (whole copies in order, then a sorted share) as runs that each take one pass over the file."""
    runs: list[list[int]] = []
    for p in picks:
        if runs and p > runs[-1][-1]:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _batches(check: SourceCheck, data: DataSection, max_chars: int) -> Iterator[tuple[list, list[dict]]]:
    """Second pass over one source: its picked rows in training order as (wheres, clipped examples) batches of
    RENDER_BATCH rows or RENDER_BATCH_CHARS characters. Each weighted copy reads the file again (streaming: no
    source is held in memory whole); a row is clipped (clip_example) as soon as it is read, so a long row is held
    at full size only while it is parsed."""
    for run in _increasing_runs(check.picks):
        wanted = [check.good[p] for p in run]
        needed, last, wheres, examples, chars = set(wanted), wanted[-1], [], [], 0
        for index, (where, example, _) in enumerate(iter_source_rows(check.source)):
            if index > last:
                break
            if index in needed:
                clipped = clip_example(example, data, max_chars)
                wheres.append(where)
                examples.append(clipped)
                chars += text_chars(clipped)
                if len(examples) == RENDER_BATCH or chars >= RENDER_BATCH_CHARS:
                    yield wheres, examples
                    wheres, examples, chars = [], [], 0
            del example
        if examples:
            yield wheres, examples


def _no_loss(data: DataSection, n_tokens: int) -> RowProblem:
    masked = "train_on_prompt is off" if not data.train_on_prompt else "all masked"
    return RowProblem("no loss after truncation", f"no token carries loss after truncation to data.seq_len "
                                                  f"{data.seq_len} ({n_tokens} tokens, {masked})")


def _pack_source(check: SourceCheck, data: DataSection, render: _Renderer, max_chars: int,
                 packer_for: Callable[[int], Packer], start: int, progress: _Progress) -> int:
    """Render and pack one source's picked rows into `packer_for(position)` (positions from `start`); rows with no
    loss token are left out with their reason. Returns the rows packed; refuses a source left with none."""
    if not check.picks:
        return 0  # data.max_examples was reached before this source (runners.rows.data_notes says so)
    kept, reported, position = 0, set(), start
    for wheres, batch in render(_batches(check, data, max_chars)):
        progress.add(batch)
        offset, span, span_offset, span_packer = 0, 0, 0, None  # a span: consecutive examples for one packer
        for i, where in enumerate(wheres):
            packer = packer_for(position) if batch.has_loss[i] else None
            if packer is not span_packer:
                if span_packer is not None:
                    span_packer.add_rendered(batch, span, i, span_offset)
                span, span_offset, span_packer = i, offset, packer
            if packer is None:
                if where not in reported:  # a weighted copy of the same row counts once
                    reported.add(where)
                    check.bad.add(where, _no_loss(data, batch.full_lengths[i]))
            else:
                kept += 1
            offset += batch.lengths[i]
            position += 1
        if span_packer is not None:
            span_packer.add_rendered(batch, span, len(wheres), span_offset)
    if check.bad.count and data.on_bad_rows == "error":
        raise check.bad.refuse(check.rows)
    if kept == 0:
        raise AdvisorError(f"{check.source.label}: no token carries loss in any of its {check.rows} rows"
                           + (f" ({check.bad.count} invalid, first: {check.bad.first[0]})" if check.bad.count else "")
                           + ": raise data.seq_len, add assistant turns, or set data.train_on_prompt: true")
    return kept


def _tell(message: str) -> None:
    """A preparation line on stderr, from whichever process prepares (not only rank 0: it may be another)."""
    print(f"advisor: {message}", file=sys.stderr, flush=True)


def _say(notes: list[str]) -> None:
    """The data notes on the run's output (report.json keeps them as data_notes)."""
    if notes:
        from runners.model import notice
        for note in notes:
            notice(note)
