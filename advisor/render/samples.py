"""Generated text for people: each prompt and what the run's adapter wrote."""


def render_samples(rows: list[dict]) -> str:
    """One completion alone as it is; several as `### prompt` headings with their completions."""
    if len(rows) == 1:
        return rows[0]["completion"]
    return "\n\n".join(f"### {row['prompt']}\n{row['completion']}" for row in rows)
