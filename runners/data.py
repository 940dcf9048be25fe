"""Data: validate and render the recipe's examples, pack them into rows, split, cache; the batch builder."""

import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection, Recipe
from runners.datasources import load_raw, load_training_examples
from runners.examples import IGNORE_INDEX, RENDER_BATCH, render_batch
from runners.rows import BadRows, iter_rows, row_problem


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
    skipped_rows: int = 0      # rows left out under data.on_bad_rows: skip


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


CACHE_FORMAT = "rows-v2"  # bump when reading or rendering changes what the same file tokenizes to


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


def _valid_rows(data: DataSection) -> tuple[list[int], int, BadRows]:
    """First pass: check every row against the format (no tokenizer needed). Returns the indices of the valid rows
    (the first data.max_examples of them), the rows read and the invalid ones. Refuses unless data.on_bad_rows: skip."""
    good, bad, total, has_input = [], BadRows(data.path), 0, False
    for index, (where, example, problem) in enumerate(iter_rows(data)):
        total += 1
        problem = problem or row_problem(example, data)
        if problem:
            bad.add(where, problem)
            continue
        has_input = has_input or (data.format == "instruction" and isinstance(example, dict)
                                   and example.get(data.input_field) not in (None, ""))
        good.append(index)
        if data.max_examples and len(good) >= data.max_examples:
            break
    if total == 0:
        raise AdvisorError(f"data.path {data.path}: no examples (the file is empty)")
    if bad.count and data.on_bad_rows == "error":
        raise bad.refuse(total)
    if data.format == "instruction" and data.input_field != DataSection.model_fields["input_field"].default \
            and not has_input and good:
        raise AdvisorError(f"data.input_field {data.input_field!r}: no row of {data.path} has this field: "
                           "name the field the context is in, or remove data.input_field")
    return good, total, bad


def _rendered(data: DataSection, tokenizer, good: list[int]):
    """Second pass: (position among the valid rows, where, ids, labels) of each valid row, rendered in batches."""
    wanted, pending = set(good), []

    def flush():
        keys = list(dict.fromkeys(k for _, _, example in pending for k in example))
        columns = {k: [example.get(k) for _, _, example in pending] for k in keys}
        out = [(n, where, ids, labels) for (n, where, _), (ids, labels) in zip(pending, render_batch(columns, data, tokenizer))]
        pending.clear()
        return out

    position = 0
    for index, (where, example, _) in enumerate(iter_rows(data)):
        if index > good[-1]:
            break
        if index in wanted:
            pending.append((position, where, example))
            position += 1
            if len(pending) == RENDER_BATCH:
                yield from flush()
    if pending:
        yield from flush()


def single_local_file(data: DataSection) -> bool:
    """One local file or save_to_disk folder, unweighted: its rows are validated with file and line (runners.rows)."""
    return not data.hub and not data.mix and data.weight == 1.0


def _examples(recipe: Recipe, tokenizer):
    """(examples, rows read, invalid rows, iterator of (position, where, ids, labels)). A single local file is read
    row by row and validated with file:line (runners.rows); hub datasets and weighted mixes come through `datasets`
    (load_training_examples), each row named by its index in the mix."""
    data = recipe.data
    if single_local_file(data):
        good, total, bad = _valid_rows(data)
        return len(good), total, bad, (_rendered(data, tokenizer, good) if good else iter(()))
    raw = load_training_examples(data, recipe.train.seed)
    n = min(data.max_examples or len(raw), len(raw))
    if n == 0:
        raise AdvisorError(f"data.path {data.path}: no examples")

    def rendered():
        for start in range(0, n, RENDER_BATCH):
            batch = raw[start:min(start + RENDER_BATCH, n)]
            for offset, (ids, labels) in enumerate(render_batch(batch, data, tokenizer)):
                yield start + offset, f"{data.path} (mixed) example {start + offset}", ids, labels
    return n, n, BadRows(data.path), rendered()


def build_dataset(recipe: Recipe, tokenizer, cache_root: Path) -> TokenizedData:
    """Validate, tokenize, mask, split and pack the recipe's data, or load the identical result from the cache.
    Rows that fail validation or carry no loss after truncation are refused, or skipped and counted
    (data.on_bad_rows); a dataset in which no token carries loss is refused before anything trains."""
    from runners.tokenizer import tokenizer_identity
    from runners.io import atomic_write_bytes

    key = _fingerprint(recipe, tokenizer_identity(tokenizer), cache_root)
    cache = Path(cache_root) / "tokenized" / f"{key}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        data = TokenizedData(PackedRows(**blob["train"]), PackedRows(**blob["val"]), blob["train_tokens"],
                             blob["examples"], True, cache, blob.get("skipped_rows", 0))
        _say_skipped(recipe.data, data.skipped_rows, blob.get("skipped_first", ""))
        return data
    n, total, bad, rows = _examples(recipe, tokenizer)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.train.seed)) if n else torch.zeros(0)
    split_off = recipe.data.val_fraction > 0 and n > 1 and not recipe.data.eval_path  # an eval file replaces the split
    n_val = math.ceil(n * recipe.data.val_fraction) if split_off else 0
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[order[:n_val].long()] = True
    train, val = Packer(recipe.data.seq_len, recipe.data.packing), Packer(recipe.data.seq_len, recipe.data.packing)
    kept = 0
    for position, where, ids, labels in rows:
        if not carries_loss(labels, recipe.data.seq_len):
            bad.add(where, f"no token carries loss after truncation to data.seq_len {recipe.data.seq_len} "
                           f"({len(ids)} tokens, {'train_on_prompt is off' if not recipe.data.train_on_prompt else 'all masked'})")
            continue
        kept += 1
        (val if is_val[position] else train).add(ids, labels)
    if bad.count and recipe.data.on_bad_rows == "error":
        raise bad.refuse(total)
    if kept == 0:
        raise AdvisorError(f"data.path {recipe.data.path}: no token carries loss in any of its {total} rows"
                           + (f" ({bad.count} invalid, first: {bad.first[0]})" if bad.count else "")
                           + ": raise data.seq_len, add assistant turns, or set data.train_on_prompt: true")
    if recipe.data.eval_path:
        _add_eval_file(val, recipe.data, tokenizer)
    train_rows, val_rows = train.finish(), val.finish()
    skipped_first = bad.describe() if bad.count else ""
    blob = {"train": train_rows.state(), "val": val_rows.state(), "train_tokens": train_rows.tokens, "examples": kept,
            "skipped_rows": bad.count, "skipped_first": skipped_first}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    _say_skipped(recipe.data, bad.count, skipped_first)
    return TokenizedData(train_rows, val_rows, train_rows.tokens, kept, False, cache, bad.count)


def _say_skipped(data: DataSection, count: int, first: str) -> None:
    if count:
        from runners.model import notice
        notice(f"data.on_bad_rows: skip: left out {count} invalid row(s) of {data.path} (first: {first})")


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


def _add_eval_file(val: "Packer", data: DataSection, tokenizer) -> None:
    """Every example of data.eval_path (same format) into the eval rows."""
    raw = load_raw(data.model_copy(update={"path": data.eval_path, "split": "train" if data.split == "train" else data.split}))
    for start in range(0, len(raw), RENDER_BATCH):
        for ids, labels in render_batch(raw[start:start + RENDER_BATCH], data, tokenizer):
            val.add(ids, labels)
