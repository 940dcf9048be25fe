"""rightsize_tiny's rows: read from rows.jsonl beside this file (any cwd, offline), prompted as training prompts."""

import json
from pathlib import Path

ROWS = Path(__file__).with_name("rows.jsonl")
# runners.examples.ALPACA_PROMPT / ALPACA_PROMPT_INPUT, copied: lm-eval imports this file by path, outside our package
PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
          "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                "### Input:\n{input}\n\n### Response:\n")


def load(**_metadata):
    """The rows as a one-split DatasetDict (lm-eval's custom_dataset passes the task's metadata, unused here)."""
    from datasets import Dataset, DatasetDict
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    return DatasetDict({"test": Dataset.from_list(rows)})


def prompt(doc: dict) -> str:
    return (PROMPT_INPUT if doc["input"] else PROMPT).format(instruction=doc["instruction"], input=doc["input"])
