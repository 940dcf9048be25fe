"""The scaling laws reproduce numbers their papers publish."""

import math

import pytest

from advisor.formulas import scaling
from advisor.core.errors import AdvisorError

# Hoffmann et al. 2022, Table 3: parameters, FLOPs and tokens of compute-optimal models.
CHINCHILLA_TABLE_3 = [(400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9),
                      (67e9, 5.76e23, 1.5e12), (175e9, 3.85e24, 3.7e12), (280e9, 9.90e24, 5.9e12),
                      (520e9, 3.43e25, 11.0e12), (1e12, 1.27e26, 21.2e12)]


@pytest.mark.parametrize("params, flops, tokens", CHINCHILLA_TABLE_3)
def test_chinchilla_rule_reproduces_table_3(params, flops, tokens):
    point = scaling.compute_optimal_for_compute(flops, "chinchilla-rule")
    # Table 3 comes from Approach 1, its token column rounded; "20 tokens per parameter" summarises it:
    # the rule recovers each row's parameters from its FLOPs within 4%, and every row trains 19-23 tokens/param.
    assert point.params == pytest.approx(params, rel=0.04)
    assert 19 <= tokens / params <= 23
    assert scaling.training_flops(params, tokens) == pytest.approx(flops, rel=0.05)


def test_chinchilla_itself_70b_on_1_4t():
    # Chinchilla: 70B parameters, 1.4T tokens, trained with Gopher's budget 5.76e23 FLOPs.
    assert scaling.training_flops(70e9, 1.4e12) == pytest.approx(5.76e23, rel=0.03)
    assert scaling.compute_optimal_for_tokens(1.4e12).params == pytest.approx(70e9)


def test_hoffmann_fit_exponents_and_gopher_budget():
    # Table 2 (Approach 3): N_opt ~ C^0.46, D_opt ~ C^0.54; Figure 1: Approach 3 gives ~40B for Gopher's budget.
    G, a, b = scaling._allocation(scaling.HOFFMANN2022)
    assert round(a, 2) == 0.46 and round(b, 2) == 0.54
    point = scaling.compute_optimal_for_compute(5.76e23, "hoffmann2022")
    assert point.params == pytest.approx(40e9, rel=0.05)


def test_epoch_fit_agrees_with_chinchilla_training():
    # Besiroglu et al. 2024: their fit is consistent with Chinchilla's 70B / 1.4T (~20 tokens per parameter),
    # unlike Hoffmann's reported Approach 3 estimates.
    point = scaling.compute_optimal_for_compute(5.76e23, "epoch2024")
    assert point.params == pytest.approx(70e9, rel=0.1)
    assert 15 < point.tokens / point.params < 25
    hoffmann = scaling.compute_optimal_for_compute(5.76e23, "hoffmann2022")
    assert hoffmann.tokens / hoffmann.params > 50


def test_parametric_loss_formula():
    fit = scaling.HOFFMANN2022
    expected = 1.69 + 406.4 / 70e9**0.3392 + 410.7 / 1.4e12**0.2849
    assert scaling.parametric_loss(70e9, 1.4e12, fit) == pytest.approx(expected)
    assert scaling.loss_at(70e9, 1.4e12).loss == pytest.approx(expected)


def test_optimal_for_tokens_inverts_optimal_for_compute():
    for fit in ("hoffmann2022", "epoch2024"):
        point = scaling.compute_optimal_for_compute(1e22, fit)
        back = scaling.compute_optimal_for_tokens(point.tokens, fit)
        assert back.params == pytest.approx(point.params, rel=1e-9)


def test_compute_optimum_minimises_loss_along_iso_flop():
    point = scaling.compute_optimal_for_compute(1e21, "epoch2024")
    for factor in (0.8, 1.25):
        n = point.params * factor
        assert scaling.parametric_loss(n, 1e21 / (6 * n), scaling.EPOCH2024) > point.loss


def test_muennighoff_repeated_data():
    # Muennighoff et al. 2023: up to ~4 epochs is nearly as good as unique data; value then decays with a
    # half-life of R_D* = 15.4 repetitions, and effective data saturates at U (1 + R_D*).
    unique = 100e9
    assert scaling.effective_repeated_tokens(unique, unique) == unique
    four = scaling.effective_repeated_tokens(4 * unique, unique)
    assert four / (4 * unique) > 0.9
    expected_four = unique + unique * 15.387756 * (1 - math.exp(-3 / 15.387756))
    assert four == pytest.approx(expected_four)
    huge = scaling.effective_repeated_tokens(1e6 * unique, unique)
    assert huge == pytest.approx(unique * (1 + 15.387756), rel=1e-6)
    r = scaling.repeated_data(2e9, 4 * 40e9, 40e9)
    assert (r.loss - r.loss_if_unique) / r.loss_if_unique < 0.01
    r40 = scaling.repeated_data(2e9, 40 * 40e9, 40e9)
    assert r40.loss - r40.loss_if_unique > 5 * (r.loss - r.loss_if_unique)


def test_sardana_figure_1_example():
    # Sardana et al. 2024, Figure 1: for a 13B Chinchilla-optimal model's quality with 2T inference tokens,
    # a ~7B model trained longer saves ~1.7e22 FLOPs (17%).
    G, a, b = scaling._allocation(scaling.HOFFMANN2022)
    compute_over_6 = (13e9 / G) ** (1 / a)
    target = scaling.parametric_loss(13e9, compute_over_6**b / G, scaling.HOFFMANN2022)
    r = scaling.inference_aware_optimum(target, 2e12, "hoffmann2022")
    assert r.chinchilla_params == pytest.approx(13e9, rel=1e-3)
    assert r.params == pytest.approx(7e9, rel=0.05)
    assert r.savings_fraction == pytest.approx(0.17, abs=0.01)
    assert r.chinchilla_total_flops - r.total_flops == pytest.approx(1.7e22, rel=0.05)


def test_inference_aware_without_inference_is_chinchilla():
    r = scaling.inference_aware_optimum(2.1, 0, "epoch2024")
    assert r.params == pytest.approx(r.chinchilla_params, rel=1e-3)
    assert r.savings_fraction == pytest.approx(0, abs=1e-6)


def test_bad_fit_and_unreachable_loss():
    with pytest.raises(AdvisorError, match="unknown fit"):
        scaling.loss_fit("kaplan")
    with pytest.raises(AdvisorError, match="irreducible"):
        scaling.inference_aware_optimum(1.5, 1e12)
