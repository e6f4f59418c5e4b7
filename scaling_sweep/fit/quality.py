"""What a fit reports: per-law quality (μ, σ, CV, extrapolation, seed noise), params.json, quality.md, summary."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PRETTY = {
    "eps_up": "ε↑",
    "gamma": "γ",
    "p": "p",
    "p_prime": "p′",
    "phi": "φ",
    "psi": "ψ",
    "alpha": "α",
    "beta": "β",
    "b": "b",
    "c_inf": "c∞",
    "eta": "η",
    "a": "a",
    "c": "c",
    "eps0": "ε0",
}


def spread(delta: np.ndarray) -> tuple[float, float]:
    """(μ, σ) of the relative divergences: their mean and (population) standard deviation."""
    delta = np.asarray(delta, dtype=float)
    delta = delta[np.isfinite(delta)]
    return (float(delta.mean()), float(delta.std())) if delta.size else (math.nan, math.nan)


@dataclass
class LawFit:
    """One fitted law (or one law fitted per configuration) and how well it fits."""

    law: str
    n_points: int
    mu: float
    sigma: float
    # published name -> (value, standard error); empty for per-configuration fits (see `configs`)
    params: dict[str, tuple[float, float]]
    pinned: dict[str, float]
    cv: tuple[float, float] | None  # (μ, σ) of δ on held-out folds
    cv_reason: str | None
    extrapolation: tuple[float, float] | None  # (μ, σ) of δ on the points train_on left out
    extrapolation_points: int
    extrapolation_reason: str | None
    seed_sigma: float | None  # seed-to-seed σ of one run, relative to the point's mean
    noise_floor: float | None  # the σ the fitted points carry from seeds alone (seed σ / √runs)
    notes: list[str]
    configs: list[dict[str, Any]]  # per-configuration fits: label, params, points, μ, σ
    label: dict[str, Any]  # what the fit covers (the power law's axis and slice); empty otherwise
    points: pd.DataFrame = field(repr=False)  # fitted points with `predicted` and `delta`
    # ê on any points that have the law's columns (for curves)
    predict: Callable[[pd.DataFrame], np.ndarray] = field(repr=False)

    @classmethod
    def build(
        cls,
        task,
        solutions: Sequence,
        delta: np.ndarray,
        *,
        cv: np.ndarray | None,
        cv_reason: str | None,
        extrapolation: np.ndarray | None,
        extrapolation_reason: str | None,
    ) -> LawFit:
        problems = task.problems
        points = pd.concat([p.frame for p in problems])
        points = points.assign(delta=delta, predicted=points["test_error"].to_numpy() * (1 + delta))
        if not task.per_config:
            problem, sol = problems[0], solutions[0]

            def predict(pts: pd.DataFrame) -> np.ndarray:
                return problem.predict(sol.theta, pts)

            params, configs = sol.params, []
        else:
            by_config = {int(p.frame["config"].iloc[0]): (p, s) for p, s in zip(problems, solutions)}

            def predict(pts: pd.DataFrame) -> np.ndarray:
                out = np.full(len(pts), np.nan)
                for cfg, idx in pts.groupby("config").indices.items():
                    if int(cfg) in by_config:
                        p, s = by_config[int(cfg)]
                        out[idx] = p.predict(s.theta, pts.iloc[idx])
                return out

            params = {}
            configs = []
            for p, s in zip(problems, solutions):
                mu, sigma = spread(s.delta)
                configs.append(
                    {"config": p.label, "params": s.params, "points": len(p.frame), "mu": mu, "sigma": sigma}
                )
        mu, sigma = spread(delta)
        seed_sigma, noise_floor = _seed_noise(points)
        return cls(
            law=task.entry,
            n_points=len(points),
            mu=mu,
            sigma=sigma,
            params=params,
            pinned=dict(problems[0].pinned),
            cv=spread(cv) if cv is not None else None,
            cv_reason=cv_reason,
            extrapolation=spread(extrapolation) if extrapolation is not None else None,
            extrapolation_points=0 if extrapolation is None else int(np.isfinite(extrapolation).sum()),
            extrapolation_reason=extrapolation_reason,
            seed_sigma=seed_sigma,
            noise_floor=noise_floor,
            notes=list(task.notes),
            configs=configs,
            label={} if task.per_config else dict(problems[0].label),
            points=points,
            predict=predict,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "params": {k: {"value": v, "stderr": e} for k, (v, e) in self.params.items()},
            "pinned": self.pinned,
            "covers": self.label,
            "points": self.n_points,
            "mu": self.mu,
            "sigma": self.sigma,
            "cv": None if self.cv is None else {"mu": self.cv[0], "sigma": self.cv[1]},
            "cv_note": self.cv_reason,
            "extrapolation": None
            if self.extrapolation is None
            else {
                "mu": self.extrapolation[0],
                "sigma": self.extrapolation[1],
                "points": self.extrapolation_points,
            },
            "extrapolation_note": self.extrapolation_reason,
            "seed_sigma": self.seed_sigma,
            "noise_floor": self.noise_floor,
            "notes": self.notes,
            "configs": [
                {**c, "params": {k: {"value": v, "stderr": e} for k, (v, e) in c["params"].items()}}
                for c in self.configs
            ],
        }


def _seed_noise(points: pd.DataFrame) -> tuple[float | None, float | None]:
    """Pooled (RMS) seed-to-seed σ of one run, and of the fitted values given how many runs each averages."""
    rows = points[(points["seeds"] >= 2) & np.isfinite(points["seed_rel"])]
    if rows.empty:
        return None, None
    rel2 = rows["seed_rel"].to_numpy() ** 2
    return float(np.sqrt(rel2.mean())), float(np.sqrt((rel2 / rows["runs"].to_numpy()).mean()))


@dataclass
class FitReport:
    """Everything fit_table found and wrote; `summary()` is what the terminal shows."""

    fits: dict[str, LawFit]
    skipped: dict[str, str]  # law -> one-line reason
    source: str
    rows: int
    n_points: int
    family: dict[str, Any]
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "source": self.source,
                "family": self.family,
                "rows": self.rows,
                "points": self.n_points,
                "options": self.options,
                "notes": self.notes,
                "laws": {name: f.to_json() for name, f in self.fits.items()},
                "skipped": self.skipped,
            }
        )

    def summary(self) -> str:
        head = f"fit of {self.source}: {self.rows} rows, {self.n_points} points" + _family_text(self.family)
        lines = [head]
        if self.fits:
            lines += _table(self)
        else:
            lines.append("no law could be fitted")
        lines += [f"skipped {law}: {why}" for law, why in self.skipped.items()]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"note ({f.law}): {n}" for f in self.fits.values() for n in f.notes]
        lines += [f"wrote {p}" for p in self.paths]
        return "\n".join(lines)

    def write(self, out_dir: Path) -> list[Path]:
        """params.json and quality.md in out_dir, each written atomically."""
        out_dir.mkdir(parents=True, exist_ok=True)
        params, quality = out_dir / "params.json", out_dir / "quality.md"
        write_text(
            params, json.dumps(self.to_json(), indent=2, ensure_ascii=False, default=_json_default) + "\n"
        )
        write_text(quality, quality_markdown(self))
        return [params, quality]


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _family_text(family: dict[str, Any]) -> str:
    parts = [str(v) for k, v in family.items() if k in ("model", "dataset") and v is not None]
    return f" ({' on '.join(parts)})" if parts else ""


def pct(x: float | None, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x * 100:+.2f}%" if signed else f"{x * 100:.2f}%"


def _row(fit: LawFit) -> list[str]:
    cv = f"{pct(fit.cv[0], True)} / {pct(fit.cv[1])}" if fit.cv else "–"
    ex = f"{pct(fit.extrapolation[0], True)} / {pct(fit.extrapolation[1])}" if fit.extrapolation else "–"
    seed = f"{pct(fit.seed_sigma)} ({pct(fit.noise_floor)})" if fit.seed_sigma is not None else "–"
    return [fit.law, str(fit.n_points), pct(fit.mu, True), pct(fit.sigma), cv, ex, seed]


HEADER = ["law", "points", "μ", "σ", "CV μ / σ", "extrap. μ / σ", "seed σ (floor)"]


def _table(report: FitReport) -> list[str]:
    rows = [HEADER] + [_row(f) for f in report.fits.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def quality_markdown(report: FitReport) -> str:
    """The fit-quality table, the parameters and what was skipped, as Markdown."""
    out = [
        "# Fit quality",
        "",
        f"Source: `{report.source}`{_family_text(report.family)}: {report.rows} rows, "
        f"{report.n_points} points ({'seeds averaged' if report.options.get('average_seeds', True) else 'every run'}).",
        "",
        "δ = (ê − ε)/ε at each fitted point; μ = mean δ, σ = std δ. CV: k-fold cross-validated δ on held-out "
        "points. Extrap.: δ on the points `train_on` left out. Seed σ: seed-to-seed spread of one run; "
        "(floor): the σ the fitted points carry from seed noise alone.",
        "",
    ]
    if report.fits:
        out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(_row(f)) + " |" for f in report.fits.values()]
    else:
        out.append("No law could be fitted.")
    if report.skipped:
        out += ["", "Skipped:", ""] + [f"- {law}: {why}" for law, why in report.skipped.items()]
    notes = [f"- {n}" for n in report.notes]
    for fit in report.fits.values():
        notes += [f"- {fit.law}: {n}" for n in fit.notes]
        notes += [f"- {fit.law}: no CV: {fit.cv_reason}"] if fit.cv_reason else []
        notes += (
            [f"- {fit.law}: no extrapolation: {fit.extrapolation_reason}"] if fit.extrapolation_reason else []
        )
    if notes:
        out += ["", "Notes:", ""] + notes
    out += ["", "## Parameters", ""]
    for fit in report.fits.values():
        out += [f"### {fit.law}", ""]
        if fit.params:
            out += ["| parameter | value | ± (1 s.e.) |", "|---|---|---|"]
            out += [f"| {PRETTY.get(k, k)} | {v:.6g} | {e:.3g} |" for k, (v, e) in fit.params.items()]
            out += [f"| {PRETTY.get(k, k)} | {v:.6g} | pinned |" for k, v in fit.pinned.items()]
        if fit.configs:
            label_cols = [k for k in fit.configs[0]["config"] if _varies(fit.configs, k)] or list(
                fit.configs[0]["config"]
            )[:1]
            names = list(fit.configs[0]["params"])
            out += [
                "| "
                + " | ".join(label_cols + [PRETTY.get(n, n) for n in names] + ["points", "μ", "σ"])
                + " |",
                "|" + "---|" * (len(label_cols) + len(names) + 3),
            ]
            for c in fit.configs:
                cells = [_fmt(c["config"].get(k)) for k in label_cols]
                cells += [f"{c['params'][n][0]:.4g} ± {c['params'][n][1]:.2g}" for n in names]
                cells += [str(c["points"]), pct(c["mu"], True), pct(c["sigma"])]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _varies(configs: list[dict[str, Any]], key: str) -> bool:
    return len({str(c["config"].get(key)) for c in configs}) > 1


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: params.json must be strict JSON for other tools."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
