"""advisor.core.convert and the msgspec Structs behind the situation, the catalogs, calibration and the results: each
constraint has a case that raises and one that passes, untrusted mappings are read strictly with errors naming the
field, and the JSON form is pydantic's for the same fields."""

import functools
import json
import math
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest
from msgspec import Meta, Struct

from advisor.catalog import load as catalog
from advisor.core.convert import InputError, convert, to_json
from advisor.decide.situation import Situation
from advisor.plan.calibration import Calibration, CalibrationEntry


class Sample(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Struct with one field of each kind the advisor's Structs use."""

    name: str
    count: Annotated[int, Meta(ge=1, le=10)] = 1
    share: Annotated[float, Meta(gt=0, le=1, description="A fraction in (0, 1].")] = 0.5
    kind: Literal["a", "b"] = "a"
    limit: Annotated[float, Meta(gt=0)] | None = None
    tags: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    table: dict[str, float] = {}
    path: Path | None = None


@pytest.mark.parametrize("fields, loc, message", [
    ({"count": 0}, ("count",), "Expected `int` >= 1"),
    ({"count": 11}, ("count",), "Expected `int` <= 10"),
    ({"share": 0.0}, ("share",), "Expected `float` > 0.0"),
    ({"share": 1.5}, ("share",), "Expected `float` <= 1.0"),
    ({"share": math.nan}, ("share",), "Expected `float` > 0.0"),
    ({"kind": "c"}, ("kind",), "Invalid enum value 'c'"),
    ({"limit": -1.0}, ("limit",), "Expected `float` > 0.0"),
    ({"count": 2.5}, ("count",), "Expected `int`, got `float`"),
    ({"share": "half"}, ("share",), "Expected `float`, got `str`"),
])
def test_each_constraint_raises_naming_its_field(fields, loc, message):
    with pytest.raises(InputError) as exc:
        convert(Sample, {"name": "x", **fields})
    assert exc.value.loc == loc and exc.value.msg == message and exc.value.kind == "invalid"
    assert str(exc.value) == f"{loc[0]}: {message}"


@pytest.mark.parametrize("fields", [
    {"count": 1}, {"count": 10}, {"share": 1e-9}, {"share": 1.0}, {"kind": "b"}, {"limit": 1e-9}, {"limit": None},
])
def test_each_constraint_passes_at_its_limit(fields):
    s = convert(Sample, {"name": "x", **fields})
    assert all(getattr(s, k) == v for k, v in fields.items())


def test_values_take_their_annotated_kind_and_structs_are_frozen():
    s = convert(Sample, {"name": "x", "count": 3.0, "share": 1, "limit": 2})
    assert (s.count, type(s.count), s.share, type(s.share), s.limit, type(s.limit)) == (3, int, 1.0, float, 2.0, float)
    with pytest.raises(AttributeError):
        s.count = 4
    with pytest.raises(TypeError):  # keyword-only, no unknown fields
        Sample(name="x", colour="red")
    assert msgspec.structs.replace(s, count=4).count == 4
    assert s == convert(Sample, {"name": "x", "count": 3, "share": 1.0, "limit": 2.0})


def test_convert_reads_a_mapping_strictly():
    s = convert(Sample, {"name": "x", "count": "3", "share": "5e-1", "tags": ["t"], "shape": [1, 2],
                         "table": {"k": 1}})
    assert (s.count, s.share, s.tags, s.shape, s.table) == (3, 0.5, ("t",), (1, 2), {"k": 1.0})
    for data, loc, message in [
        ({"name": "x", "colour": "red"}, ("colour",), "unknown key"),
        ({}, ("name",), "missing required key"),
        ({"name": 3}, ("name",), "Expected `str`, got `int`"),
        ({"name": "x", "tags": "t"}, ("tags",), "Expected `array`, got `str`"),
        ({"name": "x", "tags": ["t", 3]}, ("tags", 1), "Expected `str`, got `int`"),
        ({"name": "x", "shape": [1, "a"]}, ("shape", 1), "Expected `int`, got `str`"),
        ({"name": "x", "count": True}, ("count",), "Expected `int`, got `bool`"),
        ({"name": "x", "table": {"k": "v"}}, ("table", "..."), "Expected `float`, got `str`"),
        ({"name": "x", "count": 0}, ("count",), "Expected `int` >= 1"),
    ]:
        with pytest.raises(InputError) as exc:
            convert(Sample, data)
        assert (exc.value.loc, exc.value.msg) == (loc, message), data
    with pytest.raises(InputError, match="Expected `object`, got `array`"):
        convert(Sample, ["name", "x"])


def test_an_error_inside_a_larger_input_names_the_whole_path():
    fields = dict(gpu="A100-80GB", method="lora", runs=2, efficiency=0.4, efficiency_min=0.3, efficiency_max=0.5,
                  memory_overhead_fraction=0.1, memory_overhead_min=0.0, memory_overhead_max=0.2)
    with pytest.raises(InputError) as exc:
        convert(Calibration, {"entries": [fields | {"runs": 0}]}, loc=("calibration",))
    assert exc.value.loc == ("calibration", "entries", 0, "runs")
    with pytest.raises(InputError) as exc:
        convert(Calibration, {"entries": [fields | {"colour": 1}]})
    assert (exc.value.loc, exc.value.kind) == (("entries", 0, "colour"), "unknown")


def test_json_form_and_field_metadata():
    s = Sample(name="x", tags=("t",), shape=(1, 2), path=Path("/tmp/a"), limit=math.inf)
    data = to_json(s)
    assert list(data) == list(Sample.__struct_fields__)
    assert data["shape"] == [1, 2] and data["tags"] == ["t"] and data["path"] == "/tmp/a" and data["limit"] == math.inf
    assert json.loads(json.dumps(to_json([s]), allow_nan=True))[0]["name"] == "x"
    share = next(f for f in msgspec.structs.fields(Sample) if f.name == "share")
    assert share.type.__metadata__[0].description == "A fraction in (0, 1]." and share.default == 0.5


def test_json_form_matches_pydantic_for_the_same_fields():
    """to_json is what pydantic's model_dump(mode="json") gives for a model with the same fields and values."""
    from pydantic import create_model

    gpu = catalog.get_gpu("A100-80GB")
    assert gpu.prices  # nested structs (PriceQuote) are given to pydantic as the plain dicts they encode to
    nested = {"prices": (tuple[dict, ...], msgspec.to_builtins(gpu.prices))}
    twin = create_model("GpuTwin", **{f.name: (nested[f.name][0] if f.name in nested else f.type, ...)
                                      for f in msgspec.structs.fields(gpu)})
    values = msgspec.structs.asdict(gpu) | {k: v[1] for k, v in nested.items()}
    assert to_json(gpu) == twin(**values).model_dump(mode="json")


def test_catalog_entries_are_hashable_so_caches_serve_them():
    gpu = catalog.get_gpu("H100")
    calls = []

    @functools.cache
    def usable(entry):
        calls.append(entry.name)
        return entry.usable_memory_gib

    assert usable(gpu) == usable(msgspec.structs.replace(gpu)) and calls == ["H100-SXM"]
    assert isinstance(gpu.aliases, tuple) and isinstance(gpu.price_alternatives, tuple)


def test_structs_read_from_untrusted_input_refuse_unknown_keys():
    """Catalogs, calibration files and flags refuse a key no field takes; a run report's estimate ignores it, so
    older and newer report.json files still load."""
    from advisor.decide.review import Proposal
    from advisor.plan.estimate import Estimate

    for cls in (catalog.Gpu, catalog.ModelArch, catalog.ApiPrice, Calibration, CalibrationEntry, Situation, Proposal):
        assert cls.__struct_config__.forbid_unknown_fields, cls.__name__
    assert not Estimate.__struct_config__.forbid_unknown_fields


def test_situation_refuses_what_the_flags_would_not_take():
    assert convert(Situation, {"tokens": 2e9}).effective_tokens == 2e9
    for bad in ({"tokens": 0}, {"tokens": 1, "quality": 0}, {"tokens": 1, "gpus": 0}, {"tokens": 1, "task": "chat"},
                {"tokens": 1, "seq_len": 0}, {"tokens": 1, "output_fraction": 1.5}, {"tokens": None},
                {"tokens": 1, "on_prem": "no"}):
        with pytest.raises(InputError):
            convert(Situation, bad)


def test_calibration_numbers_must_be_finite():
    fields = dict(gpu="A100-80GB", method="lora", runs=2, efficiency=0.4, efficiency_min=0.3, efficiency_max=0.5,
                  memory_overhead_fraction=0.1, memory_overhead_min=0.0, memory_overhead_max=0.2)
    assert convert(CalibrationEntry, fields).runs == 2
    for name in ("efficiency_min", "memory_overhead_max"):
        with pytest.raises(InputError, match=f"{name}: Expected a finite number"):
            convert(CalibrationEntry, fields | {name: math.nan})
    with pytest.raises(InputError, match="efficiency"):
        convert(CalibrationEntry, fields | {"efficiency": math.inf})


def test_a_recipe_inline_arch_is_checked_by_the_same_rules():
    """pydantic hands the inline arch to msgspec (advisor.plan.recipe_sections.InlineArch), which runs its checks."""
    from pydantic import ValidationError

    from advisor.plan.recipe_sections import ModelSection

    arch = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "vocab_size": 256}
    section = ModelSection(arch=arch)
    assert section.arch.hidden_size == 64 and isinstance(section.arch, catalog.ModelArch)
    assert section.model_dump(mode="json")["arch"]["hidden_size"] == 64
    for bad in (arch | {"hidden_size": 0}, arch | {"model_type": "bert"}, arch | {"colour": "red"}):
        with pytest.raises(ValidationError):
            ModelSection(arch=bad)


def test_booleans_and_numbers_as_text_are_read_laxly():
    gpu = {"name": "G", "memory_gib": "80", "peak_tflops_bf16": 300, "memory_bandwidth_gbs": "2e3", "source": "s",
           "date": "2026-11"}
    assert convert(catalog.Gpu, gpu).memory_bandwidth_gbs == 2000.0
    for text, expected in (("true", True), ("false", False), (0, False), (1, True), ("True", True)):
        assert convert(catalog.Gpu, gpu | {"bf16": text}).bf16 is expected
    for bad in (2, "maybe"):
        with pytest.raises(InputError, match="bf16"):
            convert(catalog.Gpu, gpu | {"bf16": bad})


def test_a_union_keeps_an_exact_type_and_tuples_of_fixed_length():
    class Mixed(Struct, kw_only=True):
        value: float | str
        pair: tuple[float, float | None] = (0.0, None)

    assert convert(Mixed, {"value": "1e3"}).value == "1e3" and convert(Mixed, {"value": 2}).value == 2.0
    assert convert(Mixed, {"value": 1, "pair": [1, None]}).pair == (1.0, None)
    with pytest.raises(InputError, match="length 2"):
        convert(Mixed, {"value": 1, "pair": [1, 2, 3]})


def test_old_and_newer_reports_keep_loading_their_estimate():
    """A run report's estimate with a key this version does not know (a newer or older version's) still loads."""
    from pydantic import TypeAdapter

    from advisor.measure.runreport import ReportEstimate
    from advisor.plan.estimate import Estimate

    estimate = {name: None for name in Estimate.__struct_fields__}
    adapter = TypeAdapter(ReportEstimate)
    loaded = adapter.validate_python(estimate | {"method": "lora", "model": "m", "gpu": None, "gpus": 1,
                                                 "total_params": 1, "trainable_params": 1, "flops_per_token": 1.0,
                                                 "flops_breakdown": {}, "memory_gib": {}, "peak_memory_gib": 1.0,
                                                 "gpu_memory_gib": None, "fits": True, "gpus_needed": 1,
                                                 "suggestions": [], "efficiency": 0.4, "efficiency_source": "s",
                                                 "gradient_checkpointing": False, "sharding": "none",
                                                 "not_modelled": [], "overrides": [],
                                                 "a_key_from_another_version": 1})
    assert loaded.method == "lora" and isinstance(loaded, Estimate)
    assert adapter.dump_python(loaded, mode="json")["method"] == "lora"


def test_a_bad_value_from_a_flag_is_one_line_naming_the_flag(capsys):
    from tests.conftest import run_cli

    code, _, err = run_cli(["recommend", "--tokens", "2e9", "--proposal-model", "7B", "--proposal-method", "LoRA"],
                           capsys)
    assert code == 2 and err.strip() == ("advisor: error: --proposal-method: Invalid enum value 'LoRA' (expected one of: "
                                         "lora, qlora, full)")
    code, _, err = run_cli(["recommend", "--tokens", "2e9", "--task", "chat"], capsys)
    assert code == 2 and err.strip() == ("advisor: error: --task: Invalid enum value 'chat' (expected one of: "
                                         "knowledge, style, task, domain, language)")
    code, _, err = run_cli(["recommend", "--tokens", "2e9", "--gpus", "200000"], capsys)
    assert code == 2 and err.strip() == "advisor: error: --gpus: 200000 must be at most 100000"
