"""Writes recipes/data/tiny-instructions.jsonl: small, learnable instruction/response pairs (deterministic).

Tasks a tiny model can learn in a few hundred steps: reverse a word, upper-case it, add two numbers,
count its letters. Run: python scripts/make_tiny_data.py
"""

import json
import random
from pathlib import Path

WORDS = ("apple river stone cloud tiger maple piano orbit lemon candle rocket silver garden bridge pencil window "
         "forest harbor jungle marble needle planet quartz saddle timber violet walnut yellow zephyr anchor").split()


def example(rng: random.Random) -> dict:
    word = rng.choice(WORDS)
    kind = rng.randrange(4)
    if kind == 0:
        return {"instruction": "Reverse the word.", "input": word, "output": word[::-1]}
    if kind == 1:
        return {"instruction": "Write the word in capital letters.", "input": word, "output": word.upper()}
    if kind == 2:
        a, b = rng.randrange(100), rng.randrange(100)
        return {"instruction": f"Add {a} and {b}.", "input": "", "output": str(a + b)}
    return {"instruction": "How many letters does the word have?", "input": word, "output": str(len(word))}


def main() -> None:
    rng = random.Random(0)
    out = Path(__file__).resolve().parents[1] / "recipes" / "data" / "tiny-instructions.jsonl"
    out.write_text("".join(json.dumps(example(rng)) + "\n" for _ in range(600)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
