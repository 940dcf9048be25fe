"""What the benchmark scripts share: synthetic text, whose throughput once packed is that of any text, a device
sync for timing, and the advisor's command line run in this process (the reliability campaigns)."""

import contextlib
import io
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny-cpu-lora.yaml"  # the CPU recipe the reliability campaigns train


def synthetic_corpus(path: Path, docs: int, words_per_doc: tuple[int, int] = (100, 600), seed: int = 0) -> None:
    """JSONL documents ({"text": ...}) of random lowercase words, deterministic for a seed."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    with Path(path).open("w") as f:
        for _ in range(docs):
            f.write(json.dumps({"text": " ".join(rng.choice(vocabulary) for _ in range(rng.randint(*words_per_doc)))}) + "\n")


def sync(device) -> None:
    """Wait for the device's queued work, so a timer measures it (a no-op on the CPU, which runs synchronously)."""
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


def synthetic_instructions(path: Path, docs: int, instruction_words: tuple[int, int] = (5, 20),
                           input_words: tuple[int, int] = (3, 25), output_words: tuple[int, int] = (10, 120),
                           input_share: float = 0.4, seed: int = 0) -> None:
    """JSONL Alpaca-style rows ({"instruction", "input", "output"}) of random lowercase words, deterministic for a
    seed: a short instruction, an input in `input_share` of the rows, a longer response. The loss is on the response
    only (the Alpaca template and the instruction are prompt), so the share of tokens with a label is what a real
    instruction set gives; bench/speed.py records the share it measured in the rows."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    words = lambda span: " ".join(rng.choice(vocabulary) for _ in range(rng.randint(*span)))  # noqa: E731
    with Path(path).open("w") as f:
        for _ in range(docs):
            row = {"instruction": words(instruction_words),
                   "input": words(input_words) if rng.random() < input_share else "", "output": words(output_words)}
            f.write(json.dumps(row) + "\n")


def cli(args: list) -> tuple[int, str, str]:
    """`advisor ARGS` in this process: (exit code, stdout, stderr)."""
    from advisor.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def error_line(err: str) -> str:
    """The `advisor: error: ...` line of a command's stderr (all of it when there is none)."""
    return next((line for line in err.splitlines() if line.startswith("advisor: error: ")), err.strip())
