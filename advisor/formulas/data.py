"""Preparing the training data: the packed cache's bytes on disk, and the time to tokenize and pack it."""

# runners.data.PackedRows, what the tokenized cache stores: input_ids, labels and position_ids as int32 (4 bytes
# each) per token, and the rows' int64 offsets, one more than the rows.
PACKED_BYTES_PER_TOKEN = 3 * 4
OFFSET_BYTES = 8


def packed_cache_bytes(tokens: float, rows: float) -> float:
    """Bytes of packed rows on disk: 12 per token (int32 ids, labels, positions) + 8 per row + 8 (int64 offsets).

    Source: runners.data.PackedRows and FILES, the files of runners.prepare's cache (plus a small index.json)."""
    return PACKED_BYTES_PER_TOKEN * tokens + OFFSET_BYTES * (rows + 1)


def preparation_seconds(tokens: float, tokens_per_second_per_core: float, processes: int,
                        serial_tokens_per_second: float | None = None, start_seconds: float = 0.0,
                        parallel_efficiency: float = 1.0) -> float:
    """Wall-clock seconds to tokenize and pack `tokens` with `processes` rendering processes.

    One process: tokens / its rate. Several (runners.prepare: one per core, beside a main process that reads,
    validates, clips and packs every row): the work spreads over the processes at `parallel_efficiency` (what
    moving batches between processes and the main process's share cost), but never faster than the main process's
    share alone (`serial_tokens_per_second`): tokens x max(1 / serial rate, 1 / (rate x processes x efficiency)),
    plus `start_seconds` for the processes to start.
    Source: the rates are runners.data_probe's single-threaded measurement on a sample of the file (its tokenizer's
    own threads off, as in the rendering processes); the efficiency and start are runners.prepare's, measured by
    bench/data_scale.py."""
    if processes <= 1:
        return tokens / tokens_per_second_per_core
    parallel = 1 / (tokens_per_second_per_core * processes * parallel_efficiency)
    serial = 1 / serial_tokens_per_second if serial_tokens_per_second else 0.0
    return tokens * max(serial, parallel) + start_seconds
