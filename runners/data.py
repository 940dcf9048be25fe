"""Data: rows packed from rendered examples (in memory, or memory-mapped from runners.prepare's cache); the batch
builder that deals them to ranks."""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advisor.core.errors import AdvisorError
from runners.examples import IGNORE_INDEX, RenderedBatch


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

    @classmethod
    def open(cls, folder: Path, split: str) -> "PackedRows":
        """A split of the prepared cache, memory-mapped (private, read lazily): a process holds only the pages of
        the rows it reads, and the processes of one machine share them through the page cache."""
        arrays = {}
        for name, dtype in FILES.items():
            path = folder / f"{split}.{name}"
            count = path.stat().st_size // dtype.itemsize
            arrays[name] = torch.from_file(str(path), shared=False, size=count, dtype=dtype) if count \
                else torch.zeros(0, dtype=dtype)
        return cls(**arrays)

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
    index: dict = field(default_factory=dict)  # the prepared cache's index.json (runners.prepare)


class Packer:
    """Builds rows for training, streaming. With packing, examples fill rows of seq_len in order (an example that
    does not fit starts a new row); positions restart at each example, so attention does not cross examples
    (transformers builds a block-causal mask from position_ids), and each example's first label is ignored so no
    token is predicted from the previous example. Without packing, one example per row. Compact int32 arrays,
    held in memory, or (with `folder`) appended to files there every FLUSH_TOKENS tokens, so memory is bounded by
    a chunk and not by the dataset (runners.prepare's cache)."""

    FLUSH_TOKENS = 1 << 22  # 4M tokens: 48 MB of buffers before they go to disk

    def __init__(self, seq_len: int, packing: bool, folder: Path | None = None, split: str = "train"):
        from array import array
        self.seq_len, self.packing = seq_len, packing
        self.ids, self.labels, self.positions = array("i"), array("i"), array("i")
        self.offsets, self.row_length = array("q", [0]), 0
        self.flushed_tokens, self.flushed_rows = 0, 0
        self.pending = 0  # tokens of add_rendered's span whose rows are placed but not yet copied
        self.folder, self.split = folder, split
        self.files = {name: open(folder / f"{split}.{name}", "wb") for name in FILES} if folder else None

    def add(self, ids: list[int], labels: list[int]) -> None:
        ids, labels = ids[: self.seq_len], labels[: self.seq_len]
        if not ids:
            return
        self._start_example(len(ids))
        self.ids.extend(ids)
        self.labels.append(IGNORE_INDEX)
        self.labels.extend(labels[1:])
        self.positions.extend(range(len(ids)))
        self._end_example(len(ids))

    def add_rendered(self, batch: RenderedBatch, first: int, last: int, start: int) -> None:
        """Examples first..last-1 of a rendered batch, whose arrays begin at token `start` (runners.examples.render_packed
        has cut each to seq_len and ignored its first label): their rows' boundaries one by one, their tokens in one
        copy per array."""
        for n in batch.lengths[first:last]:
            if n:
                self._start_example(n)
                self._end_example(n)
                self.pending += n
        end = start + sum(batch.lengths[first:last])
        for target, source in ((self.ids, batch.ids), (self.labels, batch.labels), (self.positions, batch.positions)):
            target.frombytes(memoryview(source)[4 * start: 4 * end])
        self.pending = 0
        if self.files is not None and len(self.ids) >= self.FLUSH_TOKENS:
            self._flush()

    def _start_example(self, n: int) -> None:
        if not self.packing or self.row_length + n > self.seq_len:
            self._close_row()

    def _end_example(self, n: int) -> None:
        self.row_length += n

    def _close_row(self) -> None:
        if self.row_length:
            self.offsets.append(self.flushed_tokens + len(self.ids) + self.pending)
            self.row_length = 0
            if self.files is not None and len(self.ids) >= self.FLUSH_TOKENS and not self.pending:
                self._flush()

    def _flush(self) -> None:
        """Closed rows' tokens to the files (the open row stays in memory until it closes)."""
        assert self.files is not None
        from array import array
        closed = self.offsets[-1] - self.flushed_tokens  # tokens of closed rows still in memory
        for name, buffer in (("input_ids", self.ids), ("labels", self.labels), ("position_ids", self.positions)):
            self.files[name].write(memoryview(buffer)[:closed])
            del buffer[:closed]
        self.files["offsets"].write(memoryview(self.offsets)[:-1])
        self.flushed_tokens += closed
        self.flushed_rows += len(self.offsets) - 1
        self.offsets = array("q", [self.offsets[-1]])

    def finish(self) -> "PackedRows":
        self._close_row()
        if self.files is None:
            as_tensor = lambda a, dtype: torch.frombuffer(bytearray(a), dtype=dtype) if len(a) else torch.zeros(0, dtype=dtype)  # noqa: E731
            return PackedRows(as_tensor(self.ids, torch.int32), as_tensor(self.labels, torch.int32),
                              as_tensor(self.positions, torch.int32), as_tensor(self.offsets, torch.int64))
        self._flush()
        self.files["offsets"].write(memoryview(self.offsets))  # the last offset: the end of the last row
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        assert self.folder is not None
        return PackedRows.open(self.folder, self.split)


# The packed cache's files per split: int32 tokens, labels and positions, int64 row offsets (one more than the rows).
FILES = {"input_ids": torch.int32, "labels": torch.int32, "position_ids": torch.int32, "offsets": torch.int64}


def pack(examples: list[tuple[list[int], list[int]]], seq_len: int, packing: bool) -> PackedRows:
    """Rows from rendered examples (see Packer)."""
    packer = Packer(seq_len, packing)
    for ids, labels in examples:
        packer.add(ids, labels)
    return packer.finish()


def carries_loss(labels: list[int], seq_len: int) -> bool:
    """Whether an example has a target token once the Packer truncates it to seq_len and ignores its first label."""
    return any(label != IGNORE_INDEX for label in labels[1:seq_len])


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


def epoch_order(n_rows: int, epoch: int, seed: int) -> torch.Tensor:
    """The rows of one epoch in a shuffled order that depends only on (seed, epoch): resumable. A tensor (8 bytes a
    row, where a list would take 36)."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


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


def get_batch(rows: PackedRows, order: Sequence[int] | torch.Tensor, index: int, micro_batch: int, rank: int, world_size: int,
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
            picked.append(rows.row(int(order[i])))
        elif wrap:
            row = rows.row(int(order[i % len(order)]))
            picked.append({**row, "labels": torch.full_like(row["labels"], IGNORE_INDEX)})
    mine = picked[rank * micro_batch:(rank + 1) * micro_batch]
    return Batch(collate(mine, pad_id), mine, picked, micro_batch)
