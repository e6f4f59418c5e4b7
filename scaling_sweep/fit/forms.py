"""The functional forms of the laws, as plain numpy functions of their published parameters."""

from __future__ import annotations

import numpy as np

# Random-guess error is 1 - 1/classes; these are the datasets the trainer knows plus common ones.
CLASSES: dict[str, int] = {
    "mnist1d": 10,
    "mnist": 10,
    "fashion_mnist": 10,
    "digits": 10,
    "svhn": 10,
    "cifar10": 10,
    "cifar100": 100,
    "tiny_imagenet": 200,
    "imagenet": 1000,
}


def random_guess_error(classes: int) -> float:
    """ε0 = 1 − 1/classes: the error of guessing uniformly."""
    return 1.0 - 1.0 / classes


def power(x: np.ndarray, a: float, alpha: float, c: float) -> np.ndarray:
    """Baseline ε(x) = a·x^(−α) + c along one axis."""
    return a * np.power(x, -alpha) + c


def rosenfeld2020(
    m: np.ndarray,
    n: np.ndarray,
    *,
    alpha: float,
    beta: float,
    b: float,
    c_inf: float,
    eta: float,
    eps0: float,
) -> np.ndarray:
    """ê(m, n) = ε0·ẽ/√(ẽ² + η²) with ẽ = n^(−α) + b·m^(−β) + c∞ (a pinned to 1)."""
    e_tilde = np.power(n, -alpha) + b * np.power(m, -beta) + c_inf
    return eps0 * e_tilde / np.sqrt(e_tilde**2 + eta**2)


def pruning2021(
    d: np.ndarray, *, eps_np: np.ndarray | float, eps_up: float, gamma: float, p: float
) -> np.ndarray:
    """ê(d) = ε_np·|(d − j·p·(ε↑/ε_np)^(1/γ)) / (d − j·p)|^γ, j = √−1.

    |(d − j·a)/(d − j·b)|^γ = ((d² + a²)/(d² + b²))^(γ/2); it is evaluated in log space because
    (ε↑/ε_np)^(1/γ) overflows for small γ long before the ratio itself does.
    """
    d = np.asarray(d, dtype=float)
    log_eps_np = np.log(eps_np)
    log_b = np.log(p)
    log_a = log_b + (np.log(eps_up) - log_eps_np) / gamma
    log_d2 = 2.0 * np.log(d)
    log_ratio = np.logaddexp(log_d2, 2.0 * log_a) - np.logaddexp(log_d2, 2.0 * log_b)
    return np.exp(log_eps_np + 0.5 * gamma * log_ratio)


def invariant(
    d: np.ndarray, depth: np.ndarray | float, width: np.ndarray | float, *, phi: float, psi: float
) -> np.ndarray:
    """m* = l^φ·w^ψ·d: the quantity the joint pruning law depends on instead of density."""
    return np.power(depth, phi) * np.power(width, psi) * d
