"""Data: validate and render the recipe's examples, pack them into rows, split, cache; the batch builder."""

import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection, Recipe
from runners.examples import IGNORE_INDEX, RENDER_BATCH, clip_example, render_batch
from runners.rows import RowProblem, SourceCheck, check_data, data_notes, iter_source_rows


@dataclass
class PackedRows:
    """Training rows stored flat as int32 tensors (tokens, labels, positions) with row offsets: 12 bytes per
    token in memory and in the cache, where Python lists would take ten times that."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    offsets: torch.Tensor  # int64, one more than the rows

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def row(self, index: int) -> dict[str, torch.Tensor]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return {"input_ids": self.input_ids[start:end], "labels": self.labels[start:end],
                "position_ids": self.position_ids[start:end]}

    def rows(self) -> list[dict[str, torch.Tensor]]:
        return [self.row(i) for i in range(len(self))]

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()

    def state(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "labels": self.labels, "position_ids": self.position_ids, "offsets": self.offsets}

    def equal(self, other: "PackedRows") -> bool:
        return all(torch.equal(a, b) for a, b in zip(self.state().values(), other.state().values()))


@dataclass
class TokenizedData:
    train: PackedRows
    val: PackedRows
    train_tokens: int          # tokens in train rows (one epoch; rows hold no padding)
    examples: int
    cache_hit: bool
    cache_path: Path
    skipped_rows: int = 0      # rows left out under data.on_bad_rows: skip, all sources
    notes: list[str] = field(default_factory=list)  # what the run says about its data (runners.rows.data_notes)


class Packer:
    """Builds rows for training, streaming. With packing, examples fill rows of seq_len in order (an example that
    does not fit starts a new row); positions restart at each example, so attention does not cross examples
    (transformers builds a block-causal mask from position_ids), and each example's first label is ignored so no
    token is predicted from the previous example. Without packing, one example per row. Compact int32 arrays."""

    def __init__(self, seq_len: int, packing: bool):
        from array import array
        self.seq_len, self.packing = seq_len, packing
        self.ids, self.labels, self.positions = array("i"), array("i"), array("i")
        self.offsets, self.row_length = array("q", [0]), 0

    def add(self, ids: list[int], labels: list[int]) -> None:
        ids, labels = ids[: self.seq_len], labels[: self.seq_len]
        if not ids:
            return
        if not self.packing or self.row_length + len(ids) > self.seq_len:
            self._close_row()
        self.ids.extend(ids)
        self.labels.append(IGNORE_INDEX)
        self.labels.extend(labels[1:])
        self.positions.extend(range(len(ids)))
        self.row_length += len(ids)

    def _close_row(self) -> None:
        if self.row_length:
            self.offsets.append(len(self.ids))
            self.row_length = 0

    def finish(self) -> PackedRows:
        self._close_row()
        as_tensor = lambda a, dtype: torch.frombuffer(bytearray(a), dtype=dtype) if len(a) else torch.zeros(0, dtype=dtype)  # noqa: E731
        return PackedRows(as_tensor(self.ids, torch.int32), as_tensor(self.labels, torch.int32),
                          as_tensor(self.positions, torch.int32), as_tensor(self.offsets, torch.int64))


def pack(examples: list[tuple[list[int], list[int]]], seq_len: int, packing: bool) -> PackedRows:
    """Rows from rendered examples (see Packer)."""
    packer = Packer(seq_len, packing)
    for ids, labels in examples:
        packer.add(ids, labels)
    return packer.finish()


CACHE_FORMAT = "rows-v3"  # bump when reading or rendering changes what the same file tokenizes to


def _fingerprint(recipe: Recipe, tokenizer_id: str, cache_root: Path | None = None) -> str:
    """The tokenized cache's key: the content hash of every file behind the data (training, mixed-in, eval, hub
    datasets in the local cache; runners.fingerprint caches each hash by file identity, so a file is hashed once per
    change), every data setting, the tokenizer and the seed."""
    from runners.datasources import source_files
    from runners.fingerprint import data_sha256
    digest = hashlib.sha256()
    for f in source_files(recipe.data):
        digest.update(data_sha256(f, cache_root).encode())
    settings = recipe.data.model_dump(exclude={"path"})
    digest.update(json.dumps([settings, tokenizer_id, recipe.train.seed, CACHE_FORMAT], sort_keys=True).encode())
    return digest.hexdigest()[:20]


def carries_loss(labels: list[int], seq_len: int) -> bool:
    """Whether an example has a target token once the Packer truncates it to seq_len and ignores its first label."""
    return any(label != IGNORE_INDEX for label in labels[1:seq_len])


def _increasing_runs(picks: list[int]) -> list[list[int]]:
    """Weighted picks (whole copies in order, then a sorted share) as runs that each take one pass over the file."""
    runs: list[list[int]] = []
    for p in picks:
        if runs and p > runs[-1][-1]:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _render_pending(pending: list, data: DataSection, tokenizer) -> list:
    """(where, ids, labels) of a batch of (where, example), tokenized in one call."""
    keys = list(dict.fromkeys(k for _, example in pending for k in example))
    columns = {k: [example.get(k) for _, example in pending] for k in keys}
    return [(where, ids, labels) for (where, _), (ids, labels)
            in zip(pending, render_batch(columns, data, tokenizer))]


# Characters tokenized per call at most, besides RENDER_BATCH rows: the tokenizer's output costs about 200 bytes per
# token (a 10M-character row of one-character tokens took 1.96 GB of RSS), so a batch of long rows stays under
# ~0.4 GB at one character per token; a batch of 1000 typical rows (~2,000 characters) is not cut by it.
RENDER_BATCH_CHARS = 2_000_000


def _text_chars(value) -> int:
    """Characters of text in an example (its strings, in fields, lists and messages)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0


def _rendered(check: SourceCheck, data: DataSection, tokenizer, max_chars: int):
    """Second pass over one source: (where, ids, labels) of its picked rows in training order, rendered in batches
    (RENDER_BATCH rows or RENDER_BATCH_CHARS characters). Each weighted copy reads the file again (streaming: no
    source is held in memory whole); a row is clipped (clip_example) as soon as it is read, so a long row is held
    at full size only while it is parsed."""
    for run in _increasing_runs(check.picks):
        wanted = [check.good[p] for p in run]
        needed, last, pending, chars = set(wanted), wanted[-1], [], 0
        for index, (where, example, _) in enumerate(iter_source_rows(check.source)):
            if index > last:
                break
            if index in needed:
                clipped = clip_example(example, data, max_chars)
                pending.append((where, clipped))
                chars += _text_chars(clipped)
                if len(pending) == RENDER_BATCH or chars >= RENDER_BATCH_CHARS:
                    yield from _render_pending(pending, data, tokenizer)
                    pending, chars = [], 0
            del example
        if pending:
            yield from _render_pending(pending, data, tokenizer)


def _no_loss(data: DataSection, n_tokens: int) -> RowProblem:
    masked = "train_on_prompt is off" if not data.train_on_prompt else "all masked"
    return RowProblem("no loss after truncation", f"no token carries loss after truncation to data.seq_len "
                                                  f"{data.seq_len} ({n_tokens} tokens, {masked})")


def _pack_source(check: SourceCheck, data: DataSection, tokenizer, max_chars: int, pack_into, start: int) -> int:
    """Render and pack one source's picked rows (`pack_into(position, ids, labels)`, positions from `start`); rows
    with no loss token are left out with their reason. Returns the rows packed; refuses a source left with none."""
    if not check.picks:
        return 0  # data.max_examples was reached before this source (runners.rows.data_notes says so)
    kept, reported = 0, set()
    for position, (where, ids, labels) in enumerate(_rendered(check, data, tokenizer, max_chars), start):
        if not carries_loss(labels, data.seq_len):
            if where not in reported:  # a weighted copy of the same row counts once
                reported.add(where)
                check.bad.add(where, _no_loss(data, len(ids)))
            continue
        kept += 1
        pack_into(position, ids, labels)
    if check.bad.count and data.on_bad_rows == "error":
        raise check.bad.refuse(check.rows)
    if kept == 0:
        raise AdvisorError(f"{check.source.label}: no token carries loss in any of its {check.rows} rows"
                           + (f" ({check.bad.count} invalid, first: {check.bad.first[0]})" if check.bad.count else "")
                           + ": raise data.seq_len, add assistant turns, or set data.train_on_prompt: true")
    return kept


def build_dataset(recipe: Recipe, tokenizer, cache_root: Path) -> TokenizedData:
    """Validate, tokenize, mask, split and pack the recipe's data, or load the identical result from the cache.
    Every source (training file, data.mix, data.eval_path, hub datasets) goes through the same validator
    (runners.rows.check_data); rows that fail it or carry no loss after truncation are refused, or skipped and
    counted per source (data.on_bad_rows); a source left with no row is refused before anything trains. Each text
    is cut to a length its first data.seq_len tokens fit in before it is tokenized (runners.tokenizer.max_text_chars)."""
    from runners.tokenizer import max_text_chars, tokenizer_identity
    from runners.io import atomic_write_bytes

    data_section = recipe.data
    key = _fingerprint(recipe, tokenizer_identity(tokenizer), cache_root)
    cache = Path(cache_root) / "tokenized" / f"{key}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        data = TokenizedData(PackedRows(**blob["train"]), PackedRows(**blob["val"]), blob["train_tokens"],
                             blob["examples"], True, cache, blob.get("skipped_rows", 0), list(blob.get("notes", [])))
        _say(data.notes)
        return data
    checks = check_data(data_section, recipe.train.seed)
    training = [c for c in checks if not c.source.is_eval]
    n = sum(len(c.picks) for c in training)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.train.seed))
    split_off = data_section.val_fraction > 0 and n > 1 and not data_section.eval_path  # an eval file replaces the split
    n_val = math.ceil(n * data_section.val_fraction) if split_off else 0
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[order[:n_val].long()] = True
    train, val = Packer(data_section.seq_len, data_section.packing), Packer(data_section.seq_len, data_section.packing)
    max_chars = max_text_chars(tokenizer, data_section.seq_len)
    kept, start = 0, 0
    for check in checks:
        if check.source.is_eval:
            _pack_source(check, data_section, tokenizer, max_chars, lambda _, ids, labels: val.add(ids, labels), 0)
            continue
        kept += _pack_source(check, data_section, tokenizer, max_chars,
                             lambda position, ids, labels: (val if is_val[position] else train).add(ids, labels), start)
        start += len(check.picks)
    train_rows, val_rows = train.finish(), val.finish()
    skipped = sum(c.bad.count for c in checks)
    notes = data_notes(checks, data_section)
    blob = {"train": train_rows.state(), "val": val_rows.state(), "train_tokens": train_rows.tokens, "examples": kept,
            "skipped_rows": skipped, "notes": notes}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    _say(notes)
    return TokenizedData(train_rows, val_rows, train_rows.tokens, kept, False, cache, skipped, notes)


def _say(notes: list[str]) -> None:
    """The data notes on the run's output (report.json keeps them as data_notes)."""
    if notes:
        from runners.model import notice
        for note in notes:
            notice(note)


def collate(rows: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad rows to the longest; padding gets its own position block and ignored labels (no attention mask needed)."""
    length = max(r["input_ids"].numel() for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    positions = torch.arange(length).repeat(len(rows), 1)
    for i, r in enumerate(rows):
        n = r["input_ids"].numel()
        input_ids[i, :n], labels[i, :n], positions[i, :n] = r["input_ids"], r["labels"], r["position_ids"]
        positions[i, n:] = torch.arange(length - n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def epoch_order(n_rows: int, epoch: int, seed: int) -> list[int]:
    """The rows of one epoch in a shuffled order that depends only on (seed, epoch): resumable."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def micro_batches_per_epoch(n_rows: int, micro_batch: int, world_size: int) -> int:
    per_step = micro_batch * world_size
    if n_rows < per_step:
        raise AdvisorError(f"only {n_rows} training sequences for micro_batch {micro_batch} x {world_size} processes: "
                           "add data, lower train.micro_batch, or disable data.packing")
    return n_rows // per_step


def loss_tokens(rows: list[dict[str, torch.Tensor]]) -> int:
    """Labels that count toward the loss after the causal shift (the first position predicts nothing)."""
    return sum(int((r["labels"][1:] != IGNORE_INDEX).sum()) for r in rows)


@dataclass(frozen=True)
class Batch:
    """One global micro-batch: every rank's rows (each rank counts the step's tokens from them) and this rank's share,
    collated for the model."""

    inputs: dict[str, torch.Tensor]        # this rank's rows, padded (collate): input_ids, labels, position_ids
    rank_rows: list[dict[str, torch.Tensor]]
    global_rows: list[dict[str, torch.Tensor]]
    micro_batch: int

    @property
    def tokens(self) -> int:
        """Input tokens of the global micro-batch (rows hold no padding)."""
        return sum(r["input_ids"].numel() for r in self.global_rows)

    @property
    def processed_tokens(self) -> int:
        """What the GPUs computed: each rank's rows padded to its longest."""
        g, mb = self.global_rows, self.micro_batch
        return sum(mb * max(r["input_ids"].numel() for r in g[i:i + mb]) for i in range(0, len(g), mb))

    @property
    def loss_tokens(self) -> int:
        """Target tokens of the global micro-batch."""
        return loss_tokens(self.global_rows)

    @property
    def rank_loss_tokens(self) -> int:
        return loss_tokens(self.rank_rows)


def get_batch(rows: PackedRows, order: Sequence[int], index: int, micro_batch: int, rank: int, world_size: int,
              pad_id: int, wrap: bool = False) -> Batch:
    """The `index`-th global micro-batch of `rows` taken in `order` (micro_batch rows per rank, world_size ranks), for
    training and evaluation alike. Training passes an epoch's shuffled order, whose micro-batches are always full.
    Evaluation passes the rows in order with `wrap`: the last micro-batch is filled with rows from the start whose
    labels are ignored, so every rank runs the same number of batches and no row is counted twice."""
    per_step = micro_batch * world_size
    start = index * per_step
    picked = []
    for i in range(start, start + per_step):
        if i < len(order):
            picked.append(rows.row(order[i]))
        elif wrap:
            row = rows.row(order[i % len(order)])
            picked.append({**row, "labels": torch.full_like(row["labels"], IGNORE_INDEX)})
    mine = picked[rank * micro_batch:(rank + 1) * micro_batch]
    return Batch(collate(mine, pad_id), mine, picked, micro_batch)
