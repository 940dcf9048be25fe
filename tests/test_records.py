"""advisor.core.records: the frozen dataclasses behind the situation, the catalogs, calibration and the results: each
constraint has a case that raises and one that passes, untrusted mappings are read strictly, and the JSON form is
pydantic's for the same fields."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from advisor.catalog import load as catalog
from advisor.plan.calibration import Calibration, CalibrationEntry
from advisor.core.records import RecordError, bounded, construct, default, description, parse, record, to_json
from advisor.decide.situation import Situation


@record
class Sample:
    """A record with one field of each kind the advisor's records use."""

    name: str
    count: int = bounded(1, ge=1, le=10)
    share: float = bounded(0.5, gt=0, le=1, description="A fraction in (0, 1].")
    kind: str = bounded("a", choices=("a", "b"))
    limit: float | None = bounded(None, gt=0)
    tags: list[str] = bounded(default_factory=list)
    shape: tuple[int, ...] | None = None
    table: dict[str, float] = bounded(default_factory=dict)
    path: Path | None = None


@pytest.mark.parametrize("fields, loc, message", [
    ({"count": 0}, "count", "greater than or equal to 1"),
    ({"count": 11}, "count", "less than or equal to 10"),
    ({"share": 0.0}, "share", "greater than 0"),
    ({"share": 1.5}, "share", "less than or equal to 1"),
    ({"kind": "c"}, "kind", "Input should be 'a' or 'b'"),
    ({"limit": -1.0}, "limit", "greater than 0"),
    ({"count": 2.5}, "count", "fractional part"),
    ({"share": "half"}, "share", "valid number"),
])
def test_each_constraint_raises_naming_its_field(fields, loc, message):
    with pytest.raises(RecordError) as exc:
        Sample(name="x", **fields)
    assert exc.value.loc == (loc,) and message in exc.value.msg


def test_valid_values_pass_and_numbers_take_their_annotated_kind():
    s = Sample(name="x", count=3.0, share=1, limit=None)
    assert s.count == 3 and type(s.count) is int
    assert s.share == 1.0 and type(s.share) is float
    assert Sample(name="x", limit=2).limit == 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.count = 4
    with pytest.raises(TypeError):  # keyword-only, no unknown fields
        Sample(name="x", colour="red")
    assert dataclasses.replace(s, count=4).count == 4
    with pytest.raises(RecordError):  # replace builds a new record: its constraints hold too
        dataclasses.replace(s, count=40)


def test_parse_reads_a_mapping_strictly():
    s = parse(Sample, {"name": "x", "count": "3", "share": "5e-1", "tags": ["t"], "shape": [1, 2],
                       "table": {"k": 1}})
    assert (s.count, s.share, s.tags, s.shape, s.table) == (3, 0.5, ["t"], (1, 2), {"k": 1.0})
    for data, loc, message in [
        ({"name": "x", "colour": "red"}, ("colour",), "Extra inputs are not permitted"),
        ({}, ("name",), "Field required"),
        ({"name": 3}, ("name",), "valid string"),
        ({"name": "x", "tags": "t"}, ("tags",), "valid list"),
        ({"name": "x", "tags": ["t", 3]}, ("tags", 1), "valid string"),
        ({"name": "x", "shape": [1, "a"]}, ("shape", 1), "valid integer"),
        ({"name": "x", "count": True}, ("count",), "valid integer"),
        ({"name": "x", "table": {"k": "v"}}, ("table", "k"), "valid number"),
        ({"name": "x", "count": 0}, ("count",), "greater than or equal to 1"),
    ]:
        with pytest.raises(RecordError) as exc:
            parse(Sample, data)
        assert exc.value.loc == loc and message in exc.value.msg, data
    with pytest.raises(RecordError, match="valid dictionary"):
        parse(Sample, ["name", "x"])
    assert parse(Sample, {"name": "x", "colour": "red"}, extra="ignore").name == "x"


def test_json_form_and_field_metadata():
    s = Sample(name="x", tags=["t"], shape=(1, 2), path=Path("/tmp/a"), limit=math.inf)
    data = to_json(s)
    assert list(data) == [f.name for f in dataclasses.fields(Sample)]
    assert data["shape"] == [1, 2] and data["path"] == "/tmp/a" and data["limit"] == math.inf
    assert json.loads(json.dumps(to_json([s]), allow_nan=True))[0]["name"] == "x"
    assert description(Sample, "share") == "A fraction in (0, 1]." and default(Sample, "tags") == []


def test_json_form_matches_pydantic_for_the_same_fields():
    """to_json is what pydantic's model_dump(mode="json") gives for a model with the same fields and values."""
    from pydantic import create_model

    gpu = catalog.get_gpu("A100-80GB")
    hints = {f.name: (f.type if not isinstance(f.type, str) else eval(f.type, vars(catalog)), ...)  # noqa: S307
             for f in dataclasses.fields(gpu)}
    twin = create_model("GpuTwin", **hints)
    assert to_json(gpu) == twin(**{f.name: getattr(gpu, f.name) for f in dataclasses.fields(gpu)}).model_dump(mode="json")


def test_situation_refuses_what_the_flags_would_not_take():
    assert Situation(tokens=2e9).effective_tokens == 2e9
    for bad in ({"tokens": 0}, {"tokens": 1, "quality": 0}, {"tokens": 1, "gpus": 0}, {"tokens": 1, "task": "chat"},
                {"tokens": 1, "seq_len": 0}, {"tokens": 1, "output_fraction": 1.5}):
        with pytest.raises(RecordError):
            Situation(**bad)


def test_calibration_numbers_must_be_finite():
    fields = dict(gpu="A100-80GB", method="lora", runs=2, efficiency=0.4, efficiency_min=0.3, efficiency_max=0.5,
                  memory_overhead_fraction=0.1, memory_overhead_min=0.0, memory_overhead_max=0.2)
    assert CalibrationEntry(**fields).runs == 2
    with pytest.raises(RecordError, match="finite"):
        CalibrationEntry(**(fields | {"efficiency_min": math.nan}))
    with pytest.raises(RecordError) as exc:
        parse(Calibration, {"entries": [fields | {"runs": 0}]})
    assert exc.value.loc == ("entries", 0, "runs")


def test_a_recipe_inline_arch_is_checked_by_the_same_rules():
    """pydantic validates the dataclass inside the recipe schema and runs its checks (advisor.core.records.record)."""
    from pydantic import ValidationError

    from advisor.plan.recipe_sections import ModelSection

    arch = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 256}
    assert ModelSection(arch=arch).arch.hidden_size == 64
    for bad in (arch | {"hidden_size": 0}, arch | {"model_type": "bert"}, arch | {"colour": "red"}):
        with pytest.raises(ValidationError):
            ModelSection(arch=bad)


def _records():
    """Every record class of the advisor (advisor.core.records.record), from the modules that define them."""
    import importlib
    import pkgutil

    import advisor
    out = []
    for info in pkgutil.walk_packages(advisor.__path__, "advisor."):
        if info.name.startswith("advisor.cli"):
            continue
        module = importlib.import_module(info.name)
        out += [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__
                and dataclasses.is_dataclass(c) and "__post_init__" in vars(c)
                and vars(c)["__post_init__"].__qualname__.startswith("record.")]
    return out


def test_every_literal_field_of_a_record_is_checked():
    """A Literal annotation is only text to the cheap construction-time check: its field must list the same choices
    (bounded(choices=...)), or a bad value would pass silently."""
    import typing

    import advisor.decide.alternatives
    import advisor.plan.calibration
    import advisor.decide.review

    records = _records()
    assert {"Situation", "Gpu", "ModelArch", "Option", "Proposal", "Violation", "Estimate"} <= {c.__name__ for c in records}
    # names the modules import for type checking only
    type_checking_only = {**vars(advisor.decide.review), **vars(advisor.plan.calibration), **vars(advisor.decide.alternatives)}
    for cls in records:
        hints = typing.get_type_hints(cls, type_checking_only | vars(__import__(cls.__module__, fromlist=["_"])))
        for f in dataclasses.fields(cls):
            literal = [a for a in (typing.get_args(hints[f.name]) or (hints[f.name],))
                       if typing.get_origin(a) is typing.Literal]
            if literal:
                assert set(f.metadata.get("choices", ())) == set(typing.get_args(literal[0])), (cls.__name__, f.name)


def test_construction_checks_simple_types_and_parse_reads_lax_booleans():
    with pytest.raises(RecordError, match="valid number"):
        Situation(tokens=None)
    with pytest.raises(RecordError, match="valid boolean"):
        Situation(tokens=1, on_prem="no")
    assert parse(Sample, {"name": "x", "count": "4.0"}).count == 4
    gpu = {f.name: v for f, v in zip(dataclasses.fields(catalog.Gpu), [None] * 99)} | {
        "name": "G", "memory_gib": 80, "peak_tflops_bf16": 300, "memory_bandwidth_gbs": 2000, "source": "s",
        "date": "2026-11"}
    gpu = {k: v for k, v in gpu.items() if v is not None}
    for text, expected in (("yes", True), ("no", False), (0, False), (1, True), ("True", True)):
        assert parse(catalog.Gpu, gpu | {"bf16": text}).bf16 is expected
    with pytest.raises(RecordError):
        parse(catalog.Gpu, gpu | {"bf16": 2})


def test_a_union_keeps_an_exact_type_and_tuples_of_fixed_length():
    @record
    class Mixed:
        value: float | str
        pair: tuple[float, float | None] = (0.0, None)

    assert parse(Mixed, {"value": "1e3"}).value == "1e3" and parse(Mixed, {"value": 2}).value == 2.0
    assert parse(Mixed, {"value": 1, "pair": [1, None]}).pair == (1.0, None)
    with pytest.raises(RecordError, match="2 items"):
        parse(Mixed, {"value": 1, "pair": [1, 2, 3]})


def test_old_and_newer_reports_keep_loading_their_estimate():
    """A run report's estimate with a key this version does not know (a newer or older version's) still loads."""
    from advisor.plan.estimate import Estimate
    from advisor.measure.runreport import RunReport

    estimate = {f.name: None for f in dataclasses.fields(Estimate)}
    adapter = __import__("pydantic").TypeAdapter(RunReport.model_fields["estimate"].annotation)
    loaded = adapter.validate_python(estimate | {"method": "lora", "model": "m", "gpu": None, "gpus": 1,
                                                 "total_params": 1, "trainable_params": 1, "flops_per_token": 1.0,
                                                 "flops_breakdown": {}, "memory_gib": {}, "peak_memory_gib": 1.0,
                                                 "gpu_memory_gib": None, "fits": True, "gpus_needed": 1,
                                                 "suggestions": [], "efficiency": 0.4, "efficiency_source": "s",
                                                 "gradient_checkpointing": False, "sharding": "none",
                                                 "not_modelled": [], "overrides": [],
                                                 "a_key_from_another_version": 1})
    assert loaded.method == "lora"


def test_a_bad_choice_from_a_flag_is_one_line_naming_the_flag(capsys):
    from tests.conftest import run_cli

    code, _, err = run_cli(["recommend", "--tokens", "2e9", "--proposal-model", "7B", "--proposal-method", "LoRA"],
                           capsys)
    assert code == 2 and err.strip() == "advisor: error: --proposal-method: Input should be 'lora', 'qlora' or 'full'"
    code, _, err = run_cli(["recommend", "--tokens", "2e9", "--task", "chat"], capsys)
    assert code == 2 and err.strip().startswith("advisor: error: --task: Input should be 'knowledge'")


def test_construct_takes_checked_values_as_they_are():
    s = construct(Sample, {"name": "x", "count": 3})
    assert s == Sample(name="x", count=3) and s.tags == [] and s.tags is not Sample(name="y").tags
    for bad in ({"count": 3}, {"name": "x", "colour": "red"}):
        with pytest.raises(TypeError):
            construct(Sample, bad)
