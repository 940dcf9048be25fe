"""Properties of the decision over its inputs (hypothesis): constraints are hard, and loosening one never hurts."""

from hypothesis import HealthCheck, given, settings, strategies as st
from msgspec.structs import replace

from advisor.decide.alternatives import plan_cap_days
from advisor.decide.constraints import deadline_days
from advisor.decide.costing import lifetime_cost
from advisor.render.decision_text import recommend
from advisor.decide.situation import Situation
from advisor.plan.sizing import GPU_HOURS_TIE_SHARE

situations = st.builds(
    Situation,
    tokens=st.floats(1e6, 1e13).map(lambda x: float(f"{x:.3g}")),
    quality=st.sampled_from([0.3, 1.0]),
    requests_per_day=st.sampled_from([0, 1e3, 2e5, 1e6]),
    task=st.sampled_from(["knowledge", "style", "task", "domain", "language"]),
    on_prem=st.booleans(),
    api_sufficient=st.booleans(),
    base_model=st.sampled_from(["Llama-3.1-8B", "Qwen2.5-0.5B", "Llama-3.1-70B"]),
    gpu=st.sampled_from(["A100-80GB", "H100-SXM", "L4"]),
    gpus=st.sampled_from([1, 2, 6, 8, 64]),
    availability=st.sampled_from([0.25, 1.0]),
    budget_usd=st.one_of(st.none(), st.floats(10, 1e6)),
    deadline_days=st.one_of(st.none(), st.floats(0.1, 400)),
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def breaks(o, s: Situation) -> list[str]:
    """The stated constraints an option breaks, recomputed from its own numbers (not from its why_not)."""
    out = []
    if o.tier in ("peft", "full", "pretrain"):
        if s.budget_usd is not None and o.cost_usd > s.budget_usd:
            out.append("budget")
        if o.wall_days is None or o.wall_days > deadline_days(s)[0]:
            out.append("deadline")
    if o.tier != "api" and o.gpu is not None and (o.gpus > s.gpus or o.gpus == 0):
        out.append("gpus")
    if s.on_prem and o.serving is not None and (o.serving.gpus > s.gpus or not o.serving.fits):
        out.append("serving")  # issue 26: on premises the trained model must be servable on your GPUs
    if o.method == "prompt+retrieval" and s.on_prem:
        out.append("on_prem")
    if o.tier == "api" and not s.api_sufficient:
        out.append("quality_bar")
    return out


@SETTINGS
@given(s=situations)
def test_chosen_is_viable_when_any_is_and_viable_means_no_constraint_broken(s):
    rec = recommend(s)
    assert rec.viable == any(o.viable for o in rec.options) == rec.options[0].viable
    for o in rec.options:
        if o.viable:
            assert breaks(o, s) == [], (o.method, o)
        else:
            assert o.why_not and o.note
    for alt in rec.nearest_viable:
        assert alt.option.viable
        # issue 26: no alternative rents another GPU type on premises or proposes a plan past the cap
        assert not (s.on_prem and alt.kind == "other_gpu")
        assert alt.option.wall_days is None or alt.option.wall_days <= plan_cap_days(s)
    chosen = rec.options[0]
    if s.on_prem and chosen.viable and chosen.serving is not None:
        assert chosen.serving.gpus <= s.gpus and chosen.serving.fits


@SETTINGS
@given(s=situations, share=st.sampled_from([0.5, 0.1]))
def test_no_option_gets_cheaper_when_a_constraint_tightens(s, share):
    # issue 26: a tighter budget, deadline or cluster never makes an option cheaper (it may break one)
    before = {o.method: o for o in recommend(s).options}
    days = deadline_days(s)[0]
    tighter = [replace(s, deadline_days=days * share), replace(s, budget_usd=(s.budget_usd or 1e6) * share)]
    for t in tighter:
        for o in recommend(t).options:
            b = before[o.method]
            if o.tier != "pretrain":  # pretraining is re-sized to the constraints (a different model)
                # the GPU count's tie rule may trade up to GPU_HOURS_TIE_SHARE of GPU-hours for a shorter wall time
                assert o.cost_usd >= b.cost_usd * (1 - GPU_HOURS_TIE_SHARE) - 1e-6, (o.method, o.cost_usd, b.cost_usd)


@SETTINGS
@given(s=situations, factor=st.sampled_from([2.0, 10.0, 1000.0]))
def test_more_budget_never_breaks_more(s, factor):
    if s.budget_usd is None:
        s = replace(s, budget_usd=100.0)
    before = recommend(s)
    after = recommend(replace(s, budget_usd=s.budget_usd * factor))
    assert after.viable >= before.viable
    assert len(after.options[0].why_not) <= len(before.options[0].why_not)


@SETTINGS
@given(s=situations, factor=st.sampled_from([2.0, 10.0, 100.0]))
def test_a_longer_deadline_never_breaks_more(s, factor):
    days = deadline_days(s)[0]
    before = recommend(s)
    after = recommend(replace(s, deadline_days=days * factor))
    assert after.viable >= before.viable
    assert len(after.options[0].why_not) <= len(before.options[0].why_not)
    if before.viable and after.tier == before.tier and after.method == before.method:
        # pretraining is sized to its lifetime cost (training + serving, issue 26): more time may buy a smaller model
        # that costs more to train and less to serve
        cost = lifetime_cost if after.method == "pretrain" else (lambda o: o.cost_usd)
        assert cost(after.options[0]) <= cost(before.options[0]) * (1 + 1e-9)
