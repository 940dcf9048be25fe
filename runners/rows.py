"""Every row of every data source checked against the recipe's format by one validator (check_data), the same for
the training file, data.mix, data.eval_path and hub datasets, for `advisor validate` and the runner alike.

Every failure names the source's key, its file and the line or row: a wrong type, a null or missing field, a row
of another format, an unknown chat role, empty messages; each source's left-out rows are counted by reason.
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection
from runners.datasources import Row, RowProblem, Source, data_sources, iter_source_rows, weighted_indices

CHAT_ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates render


def iter_rows(data: DataSection) -> Iterator[Row]:
    """Every row of the recipe's training file (data.path), in order, with where it is."""
    yield from iter_source_rows(data_sources(data)[0])


# --- validation ---------------------------------------------------------------------------------------------

FORMATS = ("text", "instruction", "chat", "sharegpt", "completion")


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _missing(example: dict, name: str) -> RowProblem:
    return RowProblem("missing field", f"missing field {name!r} (fields: {', '.join(map(str, example)) or 'none'})")


def _text_problem(example: dict, name: str, required: bool = True) -> RowProblem | None:
    """A text field: a string, or a number written as text (`"output": 4`, `"input": 0`); never null when required."""
    if name not in example:
        return _missing(example, name) if required else None
    value = example[name]
    if value is None:
        return RowProblem("null field", f"field {name!r} is null") if required else None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return RowProblem("wrong type", f"field {name!r} is {_type_name(value)}, expected a string")
    if required and isinstance(value, str) and not value.strip():
        return RowProblem("empty text", f"field {name!r} is empty")
    return None


def _turns_problem(example: dict, name: str, role_key: str, text_key: str, roles) -> RowProblem | None:
    """A conversation field: a non-empty list of {role_key, text_key} objects with a known role and string text
    (chat: role/content; ShareGPT: from/value)."""
    pair = f"{{{role_key}, {text_key}}}"
    if name not in example:
        return _missing(example, name)
    turns = example[name]
    if turns is None:
        return RowProblem("null field", f"field {name!r} is null")
    if not isinstance(turns, list):
        return RowProblem("wrong type", f"field {name!r} is {_type_name(turns)}, expected a list of {pair} messages")
    if not turns:
        return RowProblem("empty messages", f"field {name!r} is an empty list of messages")
    for i, turn in enumerate(turns):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            return RowProblem("bad message", f"{where} is {_type_name(turn)}, expected a {pair} object")
        role = turn.get(role_key)
        if role not in roles:
            return RowProblem("bad message", f"{where} has no {role_key}" if role is None else
                              f"{where}.{role_key} {role!r} is not one of {', '.join(roles)}")
        text = turn.get(text_key)
        if not isinstance(text, str):
            got = "missing" if text_key not in turn else "null" if text is None else _type_name(text)
            return RowProblem("bad message", f"{where}.{text_key} is {got}, expected a string")
    return None


def _format_problem(example: dict, data: DataSection) -> RowProblem | None:
    if data.format == "text":
        return _text_problem(example, data.text_field)
    if data.format == "instruction":
        return (_text_problem(example, data.instruction_field) or _text_problem(example, data.output_field)
                or _text_problem(example, data.input_field, required=False))
    if data.format == "completion":
        return _text_problem(example, data.prompt_field) or _text_problem(example, data.completion_field)
    if data.format == "sharegpt":
        from runners.examples import SHAREGPT_ROLES
        return _turns_problem(example, data.conversations_field, "from", "value", SHAREGPT_ROLES)
    return _turns_problem(example, data.messages_field, "role", "content", CHAT_ROLES)


def other_format(example: dict, data: DataSection) -> str | None:
    """The first other format (with its default field names) the row is a valid example of, or None."""
    for fmt in FORMATS:
        if fmt != data.format and _format_problem(example, DataSection(path=data.path, format=fmt)) is None:
            return fmt
    return None


def row_problem(example, data: DataSection) -> RowProblem | None:
    """What makes one example unusable for the recipe's format, or None when it is valid. A row that is a valid
    example of another format says which ("other format (chat)")."""
    if not isinstance(example, dict):
        return RowProblem("wrong type", f"the row is {_type_name(example)}, expected an object with the data fields")
    problem = _format_problem(example, data)
    if problem is None:
        return None
    fmt = other_format(example, data)
    if fmt is None:
        return problem
    return RowProblem(f"other format ({fmt})", f"{problem.detail}: the row is a {fmt} row, not {data.format} "
                                               "(data.format)")


class BadRows:
    """Rows of one source left out: counted by reason, the first few kept with file and line for the message."""

    KEEP = 3

    def __init__(self, label: str):
        self.label, self.count, self.first, self.reasons = label, 0, [], Counter()

    def add(self, where: str, problem: RowProblem | str) -> None:
        self.count += 1
        self.reasons[problem.reason if isinstance(problem, RowProblem) else str(problem)] += 1
        if len(self.first) < self.KEEP:
            self.first.append(f"{where}: {problem}")

    def by_reason(self) -> str:
        """`10 empty text, 2 other format (chat)`: the counts, most common first."""
        return ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())

    def describe(self) -> str:
        return f"{self.label} {self.first[0]}" + (f" (and {self.count - 1} more)" if self.count > 1 else "")

    def summary(self, total: int) -> str:
        """One line for the run's output and report: how many rows of the source were left out, and why."""
        return f"{self.label}: left out {self.count} of {total} rows ({self.by_reason()}); first: {self.first[0]}"

    def refuse(self, total: int) -> AdvisorError:
        return AdvisorError(f"{self.describe()}; {self.count} of {total} rows are invalid: fix them, or set "
                            "data.on_bad_rows: skip to train without them")


# --- every source, one validator --------------------------------------------------------------------------------

class SourceCheck:
    """One source after the first pass: rows read, the row numbers (in reading order) of the valid ones, the invalid
    ones by reason, and whether any row has the instruction format's input field."""

    def __init__(self, source: Source):
        self.source, self.rows, self.good, self.has_input = source, 0, [], False
        self.bad = BadRows(source.label)
        self.picks: list[int] = []  # positions in `good`, in training order: weighted copies, cut by max_examples

    def majority_format(self) -> str | None:
        """Another format most rows of the source are examples of, or None."""
        other = {reason: n for reason, n in self.bad.reasons.items() if reason.startswith("other format")}
        if not other:
            return None
        reason, n = max(other.items(), key=lambda item: item[1])
        return reason.removeprefix("other format (").removesuffix(")") if 2 * n > self.rows else None


def check_source(source: Source, data: DataSection, enough: int | None = None) -> SourceCheck:
    """The first pass over one source, the same for every source: every row read and checked against the format
    (no tokenizer needed). Stops after `enough` valid rows. Refuses in one line: an unreadable file (with its line or
    byte), an empty one, invalid rows unless data.on_bad_rows: skip, a source with no valid row."""
    check = SourceCheck(source)
    for index, (where, example, problem) in enumerate(iter_source_rows(source)):
        check.rows += 1
        problem = problem or row_problem(example, data)
        if problem:
            check.bad.add(where, problem)
            continue
        check.has_input = check.has_input or (data.format == "instruction" and isinstance(example, dict)
                                              and example.get(data.input_field) not in (None, ""))
        check.good.append(index)
        if enough and len(check.good) >= enough:
            break
    if check.rows == 0:
        raise AdvisorError(f"{source.label}: no examples (the file is empty)")
    if check.bad.count and data.on_bad_rows == "error":
        raise check.bad.refuse(check.rows)
    if not check.good:
        majority = check.majority_format()
        hint = (f": its rows look like {majority} rows; set data.format: {majority} or convert the file" if majority
                else ": fix them, or remove the source")
        raise AdvisorError(f"{source.label}: none of its {check.rows} rows is a valid {data.format} example "
                           f"({check.bad.by_reason()}; first: {check.bad.first[0]}){hint}")
    return check


def _pick_rows(check: SourceCheck, seed: int, room: int | None) -> None:
    """The source's training rows: each valid row `weight` times (runners.datasources.weighted_indices), then at most
    `room` of them (data.max_examples left). A weight that selects no row is refused."""
    source, n = check.source, len(check.good)
    check.picks = weighted_indices(n, source.weight, seed)
    if not check.picks:
        weight_key = "data.weight" if source.key == "data.path" else source.key.removesuffix(".path") + ".weight"
        raise AdvisorError(f"{weight_key} {source.weight:g}: {source.label} has {n} valid row(s), and floor({n} x "
                           f"{source.weight:g}) uses none of them: raise the weight to at least {1 / n:.3g}, or remove "
                           "the source")
    if room is not None:
        check.picks = check.picks[:room]


def _refuse_eval_in_training(sources: list[Source]) -> None:
    """The eval file is not one of the training files under another name (a relative and an absolute path, a
    symlink, a hard link): the recipe validator compares the paths as written, this the files themselves."""
    import os
    evals = [s for s in sources if s.is_eval and Path(s.path).exists()]
    for ev in evals:
        for source in sources:
            if not source.is_eval and not source.hub and Path(source.path).exists() \
                    and os.path.samefile(ev.path, source.path):
                raise AdvisorError(f"data.eval_path {ev.path} is the same file as {source.label}: the eval loss would be "
                                   "measured on training data; give a held-out file, or drop data.eval_path to split "
                                   "off data.val_fraction")


def check_data(data: DataSection, seed: int) -> list[SourceCheck]:
    """Every source of the data section through the same validator (check_source), and the rows each trains on.
    Shared by `advisor validate` and the runner (runners.data.build_dataset): the same refusals, before any model
    or tokenizer loads."""
    checks, room = [], data.max_examples
    _refuse_eval_in_training(data_sources(data))
    for k, source in enumerate(data_sources(data)):
        enough = room if (source.weight == 1.0 and not source.is_eval) else None
        check = check_source(source, data, enough)
        if source.is_eval:
            check.picks = list(range(len(check.good)))  # every valid eval row, once
        else:
            _pick_rows(check, seed + k, room)
            room = None if room is None else room - len(check.picks)
        checks.append(check)
    default_input = DataSection.model_fields["input_field"].default
    if data.format == "instruction" and data.input_field != default_input and not any(c.has_input for c in checks):
        raise AdvisorError(f"data.input_field {data.input_field!r}: no row of {data.path} has this field: "
                           "name the field the context is in, or remove data.input_field")
    return checks


def data_notes(checks: list[SourceCheck], data: DataSection) -> list[str]:
    """What the run should say about its data (printed, and kept in report.json's data_notes): rows left out per
    source and why, a source whose rows are mostly of another format, a source data.max_examples leaves out."""
    notes = []
    for check in checks:
        label = check.source.label
        if check.bad.count:
            notes.append(f"data.on_bad_rows: skip: {check.bad.summary(check.rows)}")
        majority = check.majority_format()
        if majority:
            notes.append(f"{label}: most rows are {majority} rows, not {data.format} (data.format): is the format right?")
        if not check.source.is_eval and not check.picks:
            notes.append(f"data.max_examples {data.max_examples}: {label} contributes no rows (the first "
                         f"{data.max_examples} examples come from the sources before it)")
    return notes
