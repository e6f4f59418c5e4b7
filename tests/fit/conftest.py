"""Tables generated from each law with known parameters and multiplicative noise, as fixtures."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from scaling_sweep.fit import forms

POWER = {"a": 3.0, "alpha": 0.45, "c": 0.04}
ROSENFELD = {"alpha": 0.5, "beta": 0.7, "b": 30.0, "c_inf": 0.002, "eta": 0.05}
PRUNING = {"eps_up": 0.9, "gamma": 1.5, "p_prime": 0.005, "phi": 0.8, "psi": 1.6}
PRUNING_ONE = {"eps_up": 0.85, "gamma": 1.0, "p": 0.01}


def _noisy(rng: np.random.Generator, err: float, noise: float) -> float:
    return float(err * (1.0 + noise * rng.standard_normal()))


def make_power(seed: int = 0, noise: float = 0.01) -> pd.DataFrame:
    """ε(n) = a·n^(−α) + c over 3 decades of n (32 sizes: a is defined at n = 1, far below the data), one model."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(1e3, 1e6, 32).round():
        err = forms.power(n, **POWER)
        rows.append(
            {
                "dataset": "cifar10",
                "model": "mlp",
                "width": 1.0,
                "depth": 2,
                "n_train": n,
                "params_total": 1e5,
                "level": 0,
                "density": 1.0,
                "seed": 0,
                "test_error": _noisy(rng, err, noise),
            }
        )
    return pd.DataFrame(rows)


def make_rosenfeld(seed: int = 0, noise: float = 0.01, seeds: int = 1, sizes: int = 16) -> pd.DataFrame:
    """ê(m, n) on `sizes` model sizes (1e4..1e7 parameters) x `sizes` data sizes (1e3..1e6), dense rows only.

    16 x 16 because b is defined at m = 1, three decades below the smallest model: its relative error is
    about σ_β·ln(m), 4-5 % with 1 % noise on an 8 x 8 grid, 2 % on this one."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in np.geomspace(0.25, 8, sizes):
        m = round(1e4 * (w / 0.25) ** 2)
        for f in np.geomspace(1 / 1024, 1, sizes):
            n = round(1e6 * f)
            err = forms.rosenfeld2020(m, n, eps0=0.9, **ROSENFELD)
            for s in range(seeds):
                rows.append(
                    {
                        "dataset": "cifar10",
                        "model": "mlp",
                        "width": w,
                        "depth": 2,
                        "data_fraction": f,
                        "n_train": n,
                        "params_total": m,
                        "level": 0,
                        "density": 1.0,
                        "seed": s,
                        "test_error": _noisy(rng, err, noise),
                    }
                )
    return pd.DataFrame(rows)


def make_pruning(
    seed: int = 0,
    noise: float = 0.01,
    seeds: int = 1,
    depths=(2, 4, 8),
    widths=(0.5, 1.0, 2.0),
    fractions=(1.0,),
    levels: int = 41,
    params: dict | None = None,
    rate: float = 0.2,
    run_noise: float = 0.0,
) -> pd.DataFrame:
    """The joint 2021 law over (depth, width, fraction) configurations, IMP densities (1−rate)^0..^(levels−1).

    `noise` is relative noise drawn afresh at every point; `run_noise` is drawn once per run (seed) and shared by
    all its levels, as a real trajectory shares its initialization and data order."""
    p = {**PRUNING, **(params or {})}
    rng = np.random.default_rng(seed)
    rows = []
    for depth in depths:
        for width in widths:
            for f in fractions:
                eps_np = 0.04 + 0.05 * width**-0.5 * depth**-0.3 + 0.03 * f**-0.5
                for s in range(seeds):
                    run_factor = 1.0 + run_noise * rng.standard_normal() if run_noise else 1.0
                    for level in range(levels):
                        d = (1 - rate) ** level
                        m = forms.invariant(d, depth, width, phi=p["phi"], psi=p["psi"])
                        # The dense error is ε_np itself: the law takes it as measured, it does not predict it.
                        err = (
                            eps_np
                            if level == 0
                            else forms.pruning2021(
                                m, eps_np=eps_np, eps_up=p["eps_up"], gamma=p["gamma"], p=p["p_prime"]
                            )
                        )
                        rows.append(
                            {
                                "dataset": "cifar10",
                                "model": "resnet",
                                "width": width,
                                "depth": depth,
                                "data_fraction": f,
                                "n_train": round(50000 * f),
                                "params_total": round(1e4 * width**2 * depth),
                                "level": level,
                                "density": d,
                                "seed": s,
                                "test_error": _noisy(rng, err * run_factor, noise),
                            }
                        )
    return pd.DataFrame(rows)


def make_pruning_one(seed: int = 0, noise: float = 0.01) -> pd.DataFrame:
    """One configuration of the 2021 law, densities down to 0.8^40 so the high-error plateau ε↑ is reached."""
    rng = np.random.default_rng(seed)
    # ε↑/ε_np = 17 and γ = 1 leave a decade between p and the rise's start p·(ε↑/ε_np)^(1/γ): enough
    # points on the slope to pin γ. (With ε_np = 0.12 and γ = 2 the rise spans 0.4 decades, 4 points.)
    eps_np = 0.05
    rows = []
    for level in range(41):
        d = 0.8**level
        err = forms.pruning2021(d, eps_np=eps_np, **PRUNING_ONE)
        # The dense point is ε_np itself, exactly as the joint law assumes it is measured.
        rows.append(
            {
                "dataset": "cifar10",
                "model": "resnet",
                "width": 1.0,
                "depth": 20,
                "n_train": 50000,
                "level": level,
                "density": d,
                "seed": 0,
                "test_error": _noisy(rng, err, noise),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def power_table() -> pd.DataFrame:
    return make_power()


@pytest.fixture(scope="session")
def rosenfeld_table() -> pd.DataFrame:
    return make_rosenfeld()


@pytest.fixture(scope="session")
def pruning_table() -> pd.DataFrame:
    return make_pruning()


@pytest.fixture(scope="session")
def pruning_one_table() -> pd.DataFrame:
    return make_pruning_one()


@pytest.fixture(scope="session")
def small_real_like() -> pd.DataFrame:
    """Shaped like a small MNIST-1D IMP sweep: 3 widths x 2 fractions x 2 seeds, 10 densities, 3 % seed noise."""
    return make_pruning(
        seed=7,
        noise=0.03,
        seeds=2,
        depths=(3,),
        widths=(0.25, 0.5, 1.0),
        fractions=(0.25, 1.0),
        levels=10,
        params={"eps_up": 0.9, "gamma": 1.0, "p_prime": 0.02, "psi": 1.0},
    )


@pytest.fixture(scope="session")
def make() -> SimpleNamespace:
    """The generators themselves, for tests that need another seed or shape."""
    return SimpleNamespace(
        power=make_power, rosenfeld=make_rosenfeld, pruning=make_pruning, pruning_one=make_pruning_one
    )


@pytest.fixture(scope="session")
def truth() -> SimpleNamespace:
    """The parameters the generators use."""
    return SimpleNamespace(power=POWER, rosenfeld=ROSENFELD, pruning=PRUNING, pruning_one=PRUNING_ONE)
