"""The laws' functional forms: the complex-modulus form of the 2021 law, its limits, the 2020 law's invariance."""

import numpy as np
import pytest

from scaling_sweep.fit import forms


def test_pruning_law_equals_its_complex_modulus_form():
    d = np.geomspace(1e-5, 1, 50)
    eps_np, eps_up, gamma, p = 0.08, 0.9, 1.7, 0.003
    j = 1j
    direct = eps_np * np.abs((d - j * p * (eps_up / eps_np) ** (1 / gamma)) / (d - j * p)) ** gamma
    np.testing.assert_allclose(
        forms.pruning2021(d, eps_np=eps_np, eps_up=eps_up, gamma=gamma, p=p), direct, rtol=1e-12
    )


def test_pruning_law_runs_from_dense_error_to_high_plateau():
    law = dict(eps_np=0.1, eps_up=0.9, gamma=2.0, p=1e-3)
    assert forms.pruning2021(np.array([1.0]), **law)[0] == pytest.approx(0.1, rel=1e-3)
    assert forms.pruning2021(np.array([1e-9]), **law)[0] == pytest.approx(0.9, rel=1e-3)


def test_pruning_law_does_not_overflow_for_small_gamma():
    # (ε↑/ε_np)^(1/γ) = 9^200 overflows float64 when computed directly.
    out = forms.pruning2021(np.geomspace(1e-6, 1, 20), eps_np=0.1, eps_up=0.9, gamma=0.005, p=1e-3)
    assert np.isfinite(out).all()


def test_rosenfeld_law_is_invariant_under_joint_scaling_which_is_why_a_is_pinned():
    m, n = np.geomspace(1e4, 1e7, 5), np.geomspace(1e3, 1e6, 5)
    k = 7.3
    base = forms.rosenfeld2020(m, n, alpha=0.5, beta=0.7, b=30.0, c_inf=0.002, eta=0.05, eps0=0.9)
    # a·n^(−α) with a = k is the same as n^(−α) with n scaled by k^(−1/α); scale b, c∞, η by k too.
    scaled = forms.rosenfeld2020(
        m, n * k ** (-1 / 0.5), alpha=0.5, beta=0.7, b=30.0 * k, c_inf=0.002 * k, eta=0.05 * k, eps0=0.9
    )
    np.testing.assert_allclose(scaled, base, rtol=1e-12)


def test_random_guess_error():
    assert forms.random_guess_error(10) == pytest.approx(0.9)
    assert forms.random_guess_error(forms.CLASSES["cifar100"]) == pytest.approx(0.99)
