"""Generated text for people: each prompt and what the run's adapter wrote."""


EMPTY = "(no text: the model generated only end-of-sequence or special tokens; a run this short may not have learned more)"


def completion_text(completion: str) -> str:
    """The completion as written, or a line saying it is empty (an empty answer is an answer, not a silence)."""
    return completion if completion.strip() else EMPTY


def render_samples(rows: list[dict]) -> str:
    """One completion alone as it is; several as `### prompt` headings with their completions."""
    if len(rows) == 1:
        return completion_text(rows[0]["completion"])
    return "\n\n".join(f"### {row['prompt']}\n{completion_text(row['completion'])}" for row in rows)
