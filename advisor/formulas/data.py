"""Preparing the training data: the packed cache's bytes on disk, and the time to tokenize and pack it."""

# runners.data.PackedRows, what the tokenized cache stores: input_ids, labels and position_ids as int32 (4 bytes
# each) per token, and the rows' int64 offsets, one more than the rows.
PACKED_BYTES_PER_TOKEN = 3 * 4
OFFSET_BYTES = 8


def packed_cache_bytes(tokens: float, rows: float) -> float:
    """Bytes of packed rows on disk: 12 per token (int32 ids, labels, positions) + 8 per row + 8 (int64 offsets).

    Source: runners.data.PackedRows (the cache holds its tensors through torch.save, whose archive adds a few KB)."""
    return PACKED_BYTES_PER_TOKEN * tokens + OFFSET_BYTES * (rows + 1)


def preparation_seconds(tokens: float, tokens_per_second_per_process: float, processes: int,
                        serial_tokens_per_second: float | None = None, start_seconds: float = 0.0) -> float:
    """Wall-clock seconds to tokenize and pack `tokens` on `processes` processes.

    One process: tokens / its rate. Several (runners.prepare, one per core): the main process reads, validates,
    clips and packs every row (its share at `serial_tokens_per_second`) while the others render batches in a
    pipeline, so the slower stage bounds it; the main process keeps one core busy, leaving processes - 1 to render:
    tokens x max(serial seconds per token, render seconds per token / (processes - 1)), plus `start_seconds` for
    the processes to start. Without the serial rate, the rate scales with the processes.
    Source: the rates are runners.data_probe's measurement on a sample of the file, per process. On the 2-core
    development machine this gave 17.5 s for a 10.2M-token file that runners.prepare took 19.8 s over with 2
    processes (batches sent between processes are not counted)."""
    if processes <= 1 or serial_tokens_per_second is None:
        return tokens / (tokens_per_second_per_process * processes) + (start_seconds if processes > 1 else 0.0)
    serial = 1 / serial_tokens_per_second
    render = max(0.0, 1 / tokens_per_second_per_process - serial)
    return tokens * max(serial, render / max(1, processes - 1)) + start_seconds
