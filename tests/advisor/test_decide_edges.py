"""Issue 26, items 5 and 7: a retired or deprecated hosted API is not viable, and the inputs at the edge of
`advisor recommend` (and `estimate`/`review`, where they take the same flags) answer in one line naming the flag:
plausible upper bounds, a zero deadline, a GPU count's example, JSON errors under --json, GPU aliases resolved once."""

import datetime
import json

import pytest

from advisor.catalog import load as catalog
from advisor.core.bounds import (
    MAX_BUDGET_USD, MAX_GPUS, MAX_PRICE_USD_PER_GPU_HOUR, MAX_REQUESTS_PER_DAY, MAX_TOKENS, MAX_TOKENS_PER_REQUEST,
)
from advisor.core.convert import InputError, convert
from advisor.decide.constraints import check_api_retired, check_deadline
from advisor.decide.situation import DEFAULT_API, Situation
from advisor.render.decision_text import recommend
from tests.advisor.test_input_errors import one_line_error
from tests.conftest import run_cli

BEFORE_THE_GPT_4O_SHUTDOWN = datetime.date(2026, 12, 7)  # gpt-4o-mini is deprecated, shutting down 2027-01-14
AFTER_THE_GPT_4O_SHUTDOWN = datetime.date(2027, 2, 1)


def option(rec, method):
    return next(o for o in rec.options if o.method == method)


# --- item 5: retired and deprecated APIs are not viable -----------------------------------------------------

def test_a_shut_down_api_is_not_viable_and_not_chosen():
    """`--api claude-3.5-sonnet` (shut down 2025-10-22) was chosen with only a note: now its option is not viable,
    why_not "retired" with the date, and the decision is another off-the-shelf plan."""
    rec = recommend(Situation(tokens=2e9, api="claude-3.5-sonnet"))
    api = option(rec, "prompt+retrieval")
    assert not api.viable
    retired = next(v for v in api.why_not if v.constraint == "retired")
    assert "claude-3.5-sonnet was shut down on 2025-10-22" in retired.detail
    assert f"--api {DEFAULT_API}" not in retired.detail and DEFAULT_API in retired.detail  # no successor listed
    assert rec.viable and rec.method != "prompt+retrieval" and rec.options[0] is not api
    # the same situation with a current API chooses it: retirement alone is what rules the API out
    assert recommend(Situation(tokens=2e9)).method == "prompt+retrieval"


def test_retired_and_deprecated_say_which_with_the_date_and_the_successor():
    deprecated = check_api_retired(catalog.get_api("gpt-4o-mini"), BEFORE_THE_GPT_4O_SHUTDOWN)
    assert deprecated is not None and deprecated.constraint == "retired"
    assert "gpt-4o-mini is deprecated and shuts down on 2027-01-14" in deprecated.detail
    assert "--api gpt-6-luna" in deprecated.detail  # the successor the catalog records
    shut = check_api_retired(catalog.get_api("gpt-4o-mini"), AFTER_THE_GPT_4O_SHUTDOWN)
    assert shut is not None and "gpt-4o-mini was shut down on 2027-01-14" in shut.detail
    undated = check_api_retired(catalog.get_api("gemini-1.5-flash"), BEFORE_THE_GPT_4O_SHUTDOWN)
    assert undated is not None and "no shutdown date" in undated.detail
    assert check_api_retired(catalog.get_api(DEFAULT_API)) is None
    assert all(v.constraint != "retired" for v in option(recommend(Situation(tokens=2e9)), "prompt+retrieval").why_not)


def test_a_retired_api_is_a_fact_no_alternative_relaxes():
    """Retirement is not a knob: the API option stays out of the plans that would fit."""
    rec = recommend(Situation(tokens=2e9, api="claude-3.5-sonnet", api_sufficient=False, budget_usd=10))
    assert all(a.option.method != "prompt+retrieval" for a in rec.nearest_viable)


def test_every_catalog_successor_is_a_current_catalog_api():
    named = {e.name: e.replacement for e in catalog.entries("apis") if e.replacement}
    assert named, "the catalog names no successor"
    for name, successor in named.items():
        assert catalog.get_api(name).retired, name
        assert not catalog.get_api(successor).retired, (name, successor)


def test_the_cli_marks_the_retired_api_and_its_stale_price(capsys):
    """The API row says retired with the date; the stale price (dated 2024-10-22, over STALE_PRICE_MONTHS) is said
    under the table (advisor.render.notices) and in --json's notices."""
    code, out, err = run_cli(["recommend", "--tokens", "2e9", "--api", "claude-3.5-sonnet", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    api = next(o for o in data["options"] if o["method"] == "prompt+retrieval")
    assert not api["viable"] and api["why_not"][0]["constraint"] == "retired"
    assert "2025-10-22" in api["why_not"][0]["detail"]
    assert data["method"] != "prompt+retrieval"
    assert any("claude-3.5-sonnet price" in n and "12 months old or more" in n for n in data["notices"])


# --- item 7: plausible upper bounds -------------------------------------------------------------------------

@pytest.mark.parametrize("args, line", [
    (["recommend", "--tokens", "1e30"], "--tokens: 1e+30 must be at most 1e+15"),
    (["recommend", "--tokens", "2e9", "--budget", "1e30"], "--budget: 1e+30 must be at most 1e+11"),
    (["recommend", "--tokens", "2e9", "--requests-per-day", "1e30"], "--requests-per-day: 1e+30 must be at most 1e+11"),
    (["recommend", "--tokens", "2e9", "--tokens-per-request", "1e9"], "--tokens-per-request: 1e+09 must be at most 1e+08"),
    (["recommend", "--tokens", "2e9", "--price", "1e5"], "--price: 100000 must be at most 1000"),
    (["recommend", "--tokens", "2e9", "--gpus", "200000"], "--gpus: 200000 must be at most 100000"),
    (["recommend", "--tokens", "2e9", "--docs", "1e16"], "--docs: 1e+16 must be at most 1e+15"),
    (["recommend", "--docs", "1e12", "--tokens-per-doc", "1e6"], "--docs x --tokens-per-doc: 1e+18 must be at most 1e+15"),
    (["review", "--model", "7B", "--tokens", "1e30"], "--tokens: 1e+30 must be at most 1e+15"),
    (["review", "--model", "7B", "--tokens", "2e9", "--cost", "1e30"], "--cost: 1e+30 must be at most 1e+11"),
    (["review", "--model", "7B", "--tokens", "2e9", "--price", "1e5"], "--price: 100000 must be at most 1000"),
    (["estimate", "--model", "Llama-3.1-8B", "--gpu", "A100", "--tokens", "1e30"], "'--tokens': '1e30' must be at most 1e+15"),
    (["estimate", "--model", "Llama-3.1-8B", "--gpu", "A100", "--price", "1e5"], "'--price': '1e5' must be at most 1000"),
])
def test_absurd_quantities_are_one_line_naming_the_flag_and_the_bound(capsys, args, line):
    """`--tokens 1e30` answered "needs 2606569990503323901362176 x A100-80GB": now exit 2, one line."""
    code, out, err = run_cli(args, capsys)
    one_line_error(code, err, line)
    assert out == ""


@pytest.mark.parametrize("field, bound", [
    ("tokens", MAX_TOKENS), ("docs", MAX_TOKENS), ("requests_per_day", MAX_REQUESTS_PER_DAY),
    ("tokens_per_request", MAX_TOKENS_PER_REQUEST), ("budget_usd", MAX_BUDGET_USD), ("gpus", MAX_GPUS),
    ("price_usd_per_gpu_hour", MAX_PRICE_USD_PER_GPU_HOUR),
])
def test_the_engine_refuses_what_is_past_a_bound_and_takes_the_bound(field, bound):
    """The bounds are Meta(le=...) on Situation: a Situation read from any input refuses them, not only the CLI."""
    base = {"tokens": 2e9}
    with pytest.raises(InputError) as caught:
        convert(Situation, base | {field: bound * 10})
    assert caught.value.loc == (field,)
    assert getattr(convert(Situation, base | {field: bound}), field) == bound


def test_real_plans_are_far_inside_the_bounds():
    """Large but real numbers pass: Qwen3's 36T-token corpus, a frontier-scale $1B budget, 1B requests a day of a
    1M-token context, 100k GPUs."""
    s = convert(Situation, {"tokens": 36e12, "budget_usd": 1e9, "requests_per_day": 1e9, "tokens_per_request": 1e6,
                            "gpus": 100_000, "price_usd_per_gpu_hour": 20.0})
    assert s.tokens == 36e12 and s.gpus == 100_000


# --- item 7: a zero deadline ----------------------------------------------------------------------------------

def test_a_zero_deadline_is_a_duration_no_training_meets(capsys):
    """`--deadline 0d` was "not a duration": now every training option is not viable (deadline), the rest stand."""
    code, out, err = run_cli(["recommend", "--tokens", "2e9", "--deadline", "0d", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    training = [o for o in data["options"] if o["tier"] in ("peft", "full", "pretrain")]
    assert training and all(not o["viable"] for o in training)
    for o in training:
        deadline = next(v for v in o["why_not"] if v["constraint"] == "deadline")
        assert "a deadline of 0 days leaves no time to train" in deadline["detail"]
    assert data["viable"] and data["tier"] == "api"


def test_a_zero_deadline_offers_only_more_time():
    """Nothing trains in 0 days, whatever its size: the plans that would fit allow more time, none trains on 0 tokens."""
    rec = recommend(Situation(tokens=2e9, api_sufficient=False, deadline_days=0.0))
    assert not rec.viable and any("allow" in a.change for a in rec.nearest_viable)
    assert all(a.option.viable and a.option.tokens > 0 for a in rec.nearest_viable)
    assert not any("tokens instead of" in a.change for a in rec.nearest_viable)
    one_minute = check_deadline(1 / 24 / 60, 8, Situation(tokens=2e9, deadline_days=0.0))
    assert one_minute is not None and one_minute.constraint == "deadline" and one_minute.over_by is None


def test_a_zero_proposal_duration_is_one_line(capsys):
    """A proposal budgets some time: its 0 days is refused, naming the flag."""
    code, _, err = run_cli(["review", "--model", "7B", "--tokens", "2e9", "--days", "0d"], capsys)
    one_line_error(code, err, "--days: 0 must be greater than 0")


# --- item 7: a GPU count's example ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["recommend", "--tokens", "2e9", "--gpus", "0"], "'--gpus': '0' must be greater than zero; expected a whole number such as 8"),
    (["estimate", "--model", "Llama-3.1-8B", "--gpu", "A100", "--gpus", "0"], "'--gpus': '0' must be greater than zero"),
    (["recommend", "--tokens", "2e9", "--seq-len", "0"], "expected a whole number such as 2048"),
    (["review", "--model", "7B", "--tokens", "2e9", "--gpus", "0xA100"], "--gpus '0xA100': the count must be 1 or more"),
])
def test_a_zero_count_names_the_flag_and_a_count_example(capsys, args, needle):
    """`--gpus 0` suggested "500k, 2e9" (a token count's example): now a whole number such as 8."""
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, needle)
    assert "500k" not in err


# --- item 7: errors under --json ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, flag, needle", [
    (["recommend", "--json", "--tokens", "1e30"], "--tokens", "must be at most 1e+15"),
    (["recommend", "--tokens", "2e9", "--gpus", "0", "--json"], "--gpus", "greater than zero"),
    (["recommend", "--tokens", "2e9", "--gpu", "Z900", "--json"], "--gpu", "unknown GPU 'Z900'"),
    (["recommend", "--tokens", "2e9", "--task", "chat", "--json"], "--task", "expected one of"),
    (["recommend", "--tokens", "2e9", "--no-such-flag", "--json"], "--no-such-flag", "No such option"),
    (["recommend", "--json"], None, "give --tokens"),
    (["review", "--model", "7B", "--tokens", "2e9", "--cost", "1e30", "--json"], "--cost", "at most 1e+11"),
    (["estimate", "--model", "Llama-3.1-8B", "--gpu", "Z900", "--json"], None, "unknown GPU"),
])
def test_errors_under_json_are_a_json_object_on_stdout(capsys, args, flag, needle):
    code, out, err = run_cli(args, capsys)
    assert code == 2 and err == "", err
    data = json.loads(out)
    assert needle in data["error"] and data.get("flag") == flag
    code, out, err = run_cli([a for a in args if a != "--json"], capsys)  # the same call without --json: plain text
    one_line_error(code, err, needle)
    assert out == ""


# --- item 7: catalog names resolved once ----------------------------------------------------------------------

def test_aliases_are_resolved_once_for_every_option(capsys):
    """`--gpu A100` showed "A100" in one option and "A100-80GB" in the others: now the catalog's name everywhere
    (and the API and base model by their catalog names, whatever the case or a hub id)."""
    code, out, err = run_cli(["recommend", "--tokens", "2e9", "--gpu", "A100", "--api", "GPT-6-LUNA",
                              "--base-model", "meta-llama/Llama-3.1-8B", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert (data["situation"]["gpu"], data["situation"]["api"], data["situation"]["base_model"]) == (
        "A100-80GB", "gpt-6-luna", "Llama-3.1-8B")
    gpus = {o["gpu"] for o in data["options"] if o["gpu"] is not None}
    assert gpus == {"A100-80GB"}
    assert option_models(data) >= {"gpt-6-luna", "Llama-3.1-8B"}
    code, out, _ = run_cli(["recommend", "--tokens", "2e9", "--gpu", "A100"], capsys)
    table = out[out.index("Options"):out.index("Reasoning")]
    assert " A100 " not in table and "x A100-80GB" in table


def option_models(data) -> set:
    return {o["model"] for o in data["options"]}
