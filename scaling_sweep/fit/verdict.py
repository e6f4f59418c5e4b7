"""What the data can support: the regions each configuration's pruning curve reaches, which fitted parameters
the data constrain, and each law's verdict (ok, unconstrained, misfit) with its reason in plain words."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2

from scaling_sweep.fit.quality import PRETTY, LawFit
from scaling_sweep.fit.table import Points

# A point within this fraction of chance (1 − 1/classes) sits on the high-error plateau.
PLATEAU_MARGIN = 0.05
# A point within max(LOW_TOLERANCE, 2 noise σ of its ratio to ε_np) above ε_np sits on the low-error plateau.
LOW_TOLERANCE = 0.05
# The residuals reject a law when seed noise alone would give a χ² this large less often than this.
MISFIT_P = 0.01
REGIONS = ("low", "power", "high")
REGION_NAMES = {"low": "low-error plateau", "power": "power-law region", "high": "high-error plateau"}

OK, UNCONSTRAINED, MISFIT = "ok", "unconstrained", "misfit"


@dataclass
class Constraint:
    constrained: bool
    why: str = ""  # when not constrained: the reason, in plain words


@dataclass
class Judgement:
    """One law's (or one configuration's) verdict and what led to it."""

    verdict: str
    reason: str
    constrained: dict[str, Constraint] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)  # the misfit test's numbers


# ---------------------------------------------------------------- regions


def classify(frame: pd.DataFrame, eps0: float | None) -> np.ndarray:
    """The region of each point of a seed-averaged frame (needs test_error, eps_np, seed_rel, runs)."""
    err = frame["test_error"].to_numpy(dtype=float)
    eps_np = frame["eps_np"].to_numpy(dtype=float)
    rel = np.nan_to_num(frame["seed_rel"].to_numpy(dtype=float))
    runs = np.maximum(frame["runs"].to_numpy(dtype=float), 1.0)
    # The ratio ε/ε_np carries the noise of the point and of ε_np (about as many runs each).
    low_max = eps_np * (1.0 + np.maximum(LOW_TOLERANCE, 2.0 * rel * np.sqrt(2.0 / runs)))
    out = np.where(err <= low_max, "low", "power").astype(object)
    if eps0 is not None:
        out[err >= (1.0 - PLATEAU_MARGIN) * eps0] = "high"
    return out


def regions(points: Points, eps0: float | None) -> pd.DataFrame:
    """Per configuration: its columns, ε_np, the lowest density and highest error, and points per region."""
    frame = points.frame[np.isfinite(points.frame["eps_np"])]
    frame = frame.assign(region=classify(frame, eps0))
    rows = []
    for _, g in frame.groupby("config", sort=True):
        row = {c: _plain(g[c].iloc[0]) for c in points.config_columns}
        row |= {
            "eps_np": float(g["eps_np"].iloc[0]),
            "min_density": float(g["density"].min()),
            "max_error": float(g["test_error"].max()),
        }
        row |= {r: int((g["region"] == r).sum()) for r in REGIONS}
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the misfit test


def misfit_test(fit: LawFit, points: Points, eps0: float | None) -> dict[str, Any] | None:
    """χ² of the residuals against the variance seed noise alone gives them; None without seed noise.

    A point's δ varies by its own seed noise (ρ²/runs) and, for the pruning law, by the noise of its
    configuration's ε_np, an input of the law: g²·ρ_np²/(dense runs), with g = ∂log ê/∂log ε_np (1 on the
    low plateau, 0 on the high one). ρ² is the mean squared relative seed spread of the fitted points, pooled
    within each region of the curve for the pruning law (relative noise is far smaller near chance than on the
    rise, and one pool for all would call the rise's residuals too large), ρ_np² that of the dense points.
    """
    pts = fit.points
    noisy = (pts["seeds"] >= 2) & np.isfinite(pts["seed_rel"])
    if not noisy.any():
        return None
    rel2 = pts["seed_rel"].to_numpy(dtype=float) ** 2
    rho2 = np.full(len(pts), float(rel2[noisy].mean()))
    if fit.law.startswith("pruning2021"):
        region = classify(pts, eps0)
        for r in REGIONS:
            pool = noisy.to_numpy() & (region == r)
            if pool.sum() >= 5:  # too few spreads make a noisy pool; the global one serves then
                rho2[region == r] = rel2[pool].mean()
    var = rho2 / np.maximum(pts["runs"].to_numpy(dtype=float), 1.0)
    if fit.law.startswith("pruning2021"):
        dense = points.frame[points.frame["dense"] & (points.frame["seeds"] >= 2)]
        rho_np2 = float((dense["seed_rel"] ** 2).mean()) if not dense.empty else float(rel2[noisy].mean())
        dense_runs = points.frame[points.frame["dense"]].groupby("config")["runs"].sum()
        n_np = pts["config"].map(dense_runs).to_numpy(dtype=float)
        h = 1e-4
        with np.errstate(all="ignore"):
            g = np.log(fit.predict(pts.assign(eps_np=pts["eps_np"] * (1 + h))) / fit.predict(pts)) / np.log1p(
                h
            )
        var = var + np.nan_to_num(g, nan=1.0) ** 2 * rho_np2 / np.maximum(np.nan_to_num(n_np, nan=1.0), 1.0)
    delta = pts["delta"].to_numpy(dtype=float)
    ok = np.isfinite(delta) & (var > 0)
    k = fit.n_free
    dof = int(ok.sum()) - k
    if dof < 1:
        return None
    stat = float(np.sum(delta[ok] ** 2 / var[ok]))
    out = {
        "chi2": stat,
        "dof": dof,
        "p": float(chi2.sf(stat, dof)),
        "expected_sigma": float(np.sqrt(var[ok].mean())),
    }
    if fit.extrapolation_deltas is not None and fit.extrapolation_deltas.size:
        # Held-out points also carry the error of the parameters fitted without them: allow twice the variance.
        ex = fit.extrapolation_deltas[np.isfinite(fit.extrapolation_deltas)]
        ex_stat = float(np.sum(ex**2) / (2.0 * var[ok].mean()))
        out |= {
            "extrap_chi2": ex_stat,
            "extrap_dof": int(ex.size),
            "extrap_p": float(chi2.sf(ex_stat, ex.size)),
        }
    return out


# ---------------------------------------------------------------- constraints and verdicts


def judge(fit: LawFit, points: Points, eps0: float | None, table: pd.DataFrame | None) -> None:
    """Set fit.verdict, fit.verdict_reason, fit.constrained (and per configuration, for per-config fits).

    `table`: the configurations' regions (`regions(points, eps0)`), which the pruning laws' constraints use.
    """
    table = table if fit.law.startswith("pruning2021") else None
    test = misfit_test(fit, points, eps0)
    if fit.configs:
        by_config = {}
        if table is not None:
            for _, row in table.iterrows():
                by_config[_key(row, points.config_columns)] = row
        counts: dict[str, int] = {}
        for c in fit.configs:
            row = by_config.get(_key(c["config"], points.config_columns))
            frame = None if row is None else pd.DataFrame([row])
            cons = _constraints(fit.law, c["params"], c["intervals"], c["at_bound"], frame, eps0, points)
            c["constrained"] = cons
            loose = [n for n, v in cons.items() if not v.constrained]
            c["verdict"] = UNCONSTRAINED if loose else OK
            for n in loose:
                counts[n] = counts.get(n, 0) + 1
        loose_text = ", ".join(f"{PRETTY.get(n, n)} in {k}" for n, k in counts.items())
        unconstrained = (
            f"some parameters are not constrained by the data: {loose_text} of {len(fit.configs)} configurations"
            if counts
            else ""
        )
        fit.judgement = _verdict(test, unconstrained, {}, fit.sigma)
    else:
        cons = _constraints(fit.law, fit.params, fit.intervals, fit.at_bound, table, eps0, points)
        loose = [f"{PRETTY.get(n, n)} ({v.why})" for n, v in cons.items() if not v.constrained]
        loose_text = "not constrained by the data: " + "; ".join(loose) if loose else ""
        fit.judgement = _verdict(test, loose_text, cons, fit.sigma)
    fit.regions = table


def _verdict(
    test: dict[str, Any] | None, unconstrained: str, cons: dict[str, Constraint], sigma: float
) -> Judgement:
    judgement = _misfit(test, sigma)
    if judgement is None:
        return _fits(test, unconstrained, cons)
    # A rejected law is said first; what the data leave unconstrained is still worth knowing.
    judgement.constrained = cons
    if unconstrained:
        judgement.reason += f". Besides, {unconstrained[0].lower()}{unconstrained[1:]}"
    return judgement


def _misfit(test: dict[str, Any] | None, sigma: float) -> Judgement | None:
    if test is not None and test["p"] < MISFIT_P:
        reason = (
            f"the residuals are larger than seed noise explains: σ = {sigma:.1%} against "
            f"{test['expected_sigma']:.1%} expected from seed noise, χ² = {test['chi2']:.0f} on {test['dof']} degrees of freedom "
            f"(p = {test['p']:.2g}); the law does not describe these data"
        )
        return Judgement(MISFIT, reason, {}, test)
    if test is not None and test.get("extrap_p", 1.0) < MISFIT_P:
        reason = (
            f"the law fits the points it was fitted on but not the held-out ones: χ² = {test['extrap_chi2']:.0f} "
            f"on {test['extrap_dof']} held-out points (p = {test['extrap_p']:.2g}) against seed noise"
        )
        return Judgement(MISFIT, reason, {}, test)
    return None


def _fits(test: dict[str, Any] | None, unconstrained: str, cons: dict[str, Constraint]) -> Judgement:
    if unconstrained:
        return Judgement(UNCONSTRAINED, unconstrained, cons, test or {})
    if test is None:
        reason = (
            "every parameter is constrained; the residuals were not tested against seed noise (one run per "
            "point: run ≥ 2 seeds for the test)"
        )
    else:
        reason = (
            f"every parameter is constrained, and the residuals are what seed noise explains (χ² = "
            f"{test['chi2']:.0f} on {test['dof']} degrees of freedom, p = {test['p']:.2g})"
        )
    return Judgement(OK, reason, cons, test or {})


def _constraints(
    law: str,
    params: dict[str, tuple[float, float]],
    intervals: dict[str, Any],
    at_bound: frozenset[str] | set[str],
    table: pd.DataFrame | None,
    eps0: float | None,
    points: Points,
) -> dict[str, Constraint]:
    out = {}
    for name, (value, _) in params.items():
        why = _coverage(law, name, table, eps0)
        if not why and name in at_bound:
            why = f"{value:.3g} sits on a bound of its allowed range"
        if not why and name in intervals and intervals[name].wider_than_value(value):
            iv = intervals[name]
            why = f"its 95 % interval [{iv.low:.3g}, {iv.high:.3g}] is wider than its value {value:.3g}"
        out[name] = Constraint(not why, why)
    return out


def _coverage(law: str, name: str, table: pd.DataFrame | None, eps0: float | None) -> str:
    """Why the points cannot pin this parameter down, from the regions they reach; '' when they can."""
    if table is None or not law.startswith("pruning2021"):
        return ""
    if name == "eps_up":
        if eps0 is None:
            return "chance is unknown (pass classes=), so whether any point reaches the high-error plateau is too"
        if table["high"].sum() < 1:
            return (
                f"no point comes within {PLATEAU_MARGIN:.0%} of chance ({eps0:.3g}); the highest error is "
                f"{table['max_error'].max():.3g}"
            )
        return ""
    if name in ("gamma", "p", "p_prime"):
        if table["power"].sum() < 2:
            return f"{int(table['power'].sum())} point(s) in the power-law region; its slope needs at least 2"
        return ""
    for col, param in (("depth", "phi"), ("width", "psi")):
        if name == param and col in table:
            n = table.loc[table["power"] >= 1, col].nunique()
            if n < 2:
                return f"only {n} {col} value(s) have points in the power-law region, where {col} shifts the curve"
    return ""


def _key(row: Any, cols: list[str]) -> tuple:
    return tuple(str(_plain(row[c])) if c in row else "" for c in cols)


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return float(value) if isinstance(value, float) and math.isfinite(value) else value
