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
    n_free: int = 0  # free parameters in all (summed over configurations for per-configuration fits)
    intervals: dict[str, Any] = field(default_factory=dict)  # published name -> bootstrap Interval
    at_bound: frozenset[str] = frozenset()  # parameters that ended on a bound of their range
    bootstrap: str | None = None  # how the intervals were drawn
    extrapolation_deltas: np.ndarray | None = field(default=None, repr=False)
    judgement: Any = None  # verdict.Judgement, set by verdict.judge
    regions: pd.DataFrame | None = field(default=None, repr=False)  # per configuration (pruning laws)

    @property
    def verdict(self) -> str | None:
        return None if self.judgement is None else self.judgement.verdict

    @property
    def verdict_reason(self) -> str | None:
        return None if self.judgement is None else self.judgement.reason

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
        bootstrap: str | None = None,
    ) -> LawFit:
        problems = task.problems
        points = pd.concat([p.frame for p in problems])
        points = points.assign(delta=delta, predicted=points["test_error"].to_numpy() * (1 + delta))
        if not task.per_config:
            problem, sol = problems[0], solutions[0]

            def predict(pts: pd.DataFrame) -> np.ndarray:
                return problem.predict(sol.theta, pts)

            params, configs = sol.params, []
            intervals, at_bound = sol.intervals, sol.at_bound
        else:
            by_config = {int(p.frame["config"].iloc[0]): (p, s) for p, s in zip(problems, solutions)}

            def predict(pts: pd.DataFrame) -> np.ndarray:
                out = np.full(len(pts), np.nan)
                for cfg, idx in pts.groupby("config").indices.items():
                    if int(cfg) in by_config:
                        p, s = by_config[int(cfg)]
                        out[idx] = p.predict(s.theta, pts.iloc[idx])
                return out

            params, configs, intervals, at_bound = {}, [], {}, frozenset()
            for p, s in zip(problems, solutions):
                mu, sigma = spread(s.delta)
                configs.append(
                    {
                        "config": p.label,
                        "params": s.params,
                        "intervals": s.intervals,
                        "at_bound": s.at_bound,
                        "points": len(p.frame),
                        "mu": mu,
                        "sigma": sigma,
                    }
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
            n_free=sum(p.n_free for p in problems),
            intervals=intervals,
            at_bound=at_bound,
            bootstrap=bootstrap,
            extrapolation_deltas=extrapolation,
        )

    def to_json(self) -> dict[str, Any]:
        j = self.judgement
        return {
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "misfit_test": None if j is None else (j.test or None),
            "params": _params_json(self.params, self.intervals, j.constrained if j else {}),
            "bootstrap": self.bootstrap,
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
                {
                    "config": c["config"],
                    "verdict": c.get("verdict"),
                    "params": _params_json(c["params"], c["intervals"], c.get("constrained", {})),
                    "points": c["points"],
                    "mu": c["mu"],
                    "sigma": c["sigma"],
                }
                for c in self.configs
            ],
        }


def _params_json(
    params: dict[str, tuple[float, float]], intervals: dict[str, Any], constrained: dict[str, Any]
) -> dict[str, Any]:
    """value, stderr (the bootstrap's where there is one, else the Jacobian's), ci95, constrained and why not."""
    out = {}
    for name, (value, stderr) in params.items():
        iv = intervals.get(name)
        c = constrained.get(name)
        out[name] = {
            "value": value,
            "stderr": iv.std if iv is not None else stderr,
            "ci95": None if iv is None else [iv.low, iv.high],
            "constrained": None if c is None else c.constrained,
            "unconstrained_because": None if c is None or c.constrained else c.why,
        }
    return out


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
    # per configuration: which regions of the pruning curve its points reach (None without pruned rows)
    regions: pd.DataFrame | None = None
    chance: float | None = None  # ε0 = 1 − 1/classes, when known

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "source": self.source,
                "family": self.family,
                "rows": self.rows,
                "points": self.n_points,
                "options": self.options,
                "notes": self.notes,
                "chance": self.chance,
                "verdicts": {name: f.verdict for name, f in self.fits.items()},
                "laws": {name: f.to_json() for name, f in self.fits.items()},
                "regions": None if self.regions is None else self.regions.to_dict(orient="records"),
                "skipped": self.skipped,
            }
        )

    def verdict_lines(self) -> list[str]:
        """One line per law: its verdict and why, in plain words; what a reader must see before any number."""
        return [f"{f.law}: {f.verdict.upper()}: {f.verdict_reason}" for f in self.fits.values() if f.verdict]

    def summary(self) -> str:
        head = f"fit of {self.source}: {self.rows} rows, {self.n_points} points" + _family_text(self.family)
        lines = self.verdict_lines() + [head]  # what the data support comes before any number
        if self.regions is not None:
            lines += region_lines(self.regions)
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
    test = fit.judgement.test if fit.judgement is not None else {}
    noise = pct(test.get("expected_sigma")) if test else "–"
    return [fit.law, str(fit.n_points), pct(fit.mu, True), pct(fit.sigma), noise, cv, ex, seed]


# noise σ: the σ seed noise alone would give these residuals, ε_np's noise included (the misfit test's yardstick)
HEADER = ["law", "points", "μ", "σ", "noise σ", "CV μ / σ", "extrap. μ / σ", "seed σ (floor)"]


def _table(report: FitReport) -> list[str]:
    rows = [HEADER] + [_row(f) for f in report.fits.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def quality_markdown(report: FitReport) -> str:
    """The fit-quality table, the parameters and what was skipped, as Markdown."""
    out = ["# Fit quality", ""]
    source = [
        f"Source: `{report.source}`{_family_text(report.family)}: {report.rows} rows, "
        f"{report.n_points} points ({'seeds averaged' if report.options.get('average_seeds', True) else 'every run'}).",
        "",
    ]
    if report.fits:
        out += ["## Verdicts", ""] + [
            f"- **{line.split(': ', 2)[0]}**: {line.split(': ', 1)[1]}" for line in report.verdict_lines()
        ]
        out += [
            "",
            "ok: every parameter is constrained and the residuals are what seed noise explains; "
            "unconstrained: some parameter is not pinned down by these data (read it as unknown); misfit: "
            "the residuals are larger than seed noise explains (the law does not describe the data). "
            "See docs/fitting.md.",
            "",
        ]
    out += source
    if report.regions is not None:
        out += (
            ["## Regions each configuration reaches", ""]
            + region_markdown(report.regions, report.chance)
            + [""]
        )
    out += [
        "## Fit quality",
        "",
        "δ = (ê − ε)/ε at each fitted point; μ = mean δ, σ = std δ. Noise σ: the σ seed noise alone would give "
        "δ (counting the noise of each configuration's ε_np); a law that holds has σ near it. CV: k-fold cross-validated δ on held-out "
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
        if fit.bootstrap:
            out += [f"Intervals: 95 % percentile intervals from {fit.bootstrap}.", ""]
        if fit.params:
            cons = fit.judgement.constrained if fit.judgement else {}
            out += [
                "| parameter | value | ± (1 s.e.) | 95 % interval | constrained |",
                "|---|---|---|---|---|",
            ]
            for k, (v, e) in fit.params.items():
                iv = fit.intervals.get(k)
                c = cons.get(k)
                out.append(
                    f"| {PRETTY.get(k, k)} | {v:.6g} | {iv.std if iv else e:.3g} | "
                    f"{f'[{iv.low:.4g}, {iv.high:.4g}]' if iv else '–'} | "
                    f"{'–' if c is None else ('yes' if c.constrained else 'no: ' + c.why)} |"
                )
            out += [f"| {PRETTY.get(k, k)} | {v:.6g} | pinned | | |" for k, v in fit.pinned.items()]
        if fit.configs:
            label_cols = [k for k in fit.configs[0]["config"] if _varies(fit.configs, k)] or list(
                fit.configs[0]["config"]
            )[:1]
            names = list(fit.configs[0]["params"])
            out += [
                "| "
                + " | ".join(label_cols + [PRETTY.get(n, n) for n in names] + ["points", "μ", "σ", "verdict"])
                + " |",
                "|" + "---|" * (len(label_cols) + len(names) + 4),
            ]
            for c in fit.configs:
                cells = [_fmt(c["config"].get(k)) for k in label_cols]
                cells += [_param_cell(c, n) for n in names]
                cells += [str(c["points"]), pct(c["mu"], True), pct(c["sigma"]), str(c.get("verdict", "–"))]
                out.append("| " + " | ".join(cells) + " |")
            out += ["", "A parameter marked * is not constrained by that configuration's data."]
        out.append("")
    return "\n".join(out)


def _param_cell(c: dict[str, Any], name: str) -> str:
    value, stderr = c["params"][name]
    iv = c["intervals"].get(name)
    spread_text = f"[{iv.low:.3g}, {iv.high:.3g}]" if iv else f"± {stderr:.2g}"
    loose = c.get("constrained", {}).get(name)
    return f"{value:.4g} {spread_text}" + (" *" if loose is not None and not loose.constrained else "")


REGION_HEADER = ["lowest density", "highest error", "ε_np", "low", "power", "high", "reaches"]


def reached_regions(row: dict[str, Any]) -> list[str]:
    """The regions a configuration reaches: a plateau with one point, the power-law region with two (a slope)."""
    return [r for r in ("low", "power", "high") if row[r] >= (2 if r == "power" else 1)]


def _region_cells(row: dict[str, Any]) -> list[str]:
    reached = reached_regions(row)
    return [
        f"{row['min_density']:.3g}",
        f"{row['max_error']:.3g}",
        f"{row['eps_np']:.3g}",
        str(row["low"]),
        str(row["power"]),
        str(row["high"]),
        "all three" if len(reached) == 3 else (", ".join(reached) or "none"),
    ]


def _region_labels(regions: pd.DataFrame) -> list[str]:
    cols = [
        c for c in regions.columns if c not in ("eps_np", "min_density", "max_error", "low", "power", "high")
    ]
    varying = [c for c in cols if regions[c].astype(str).nunique() > 1]
    if "data_fraction" in varying and "n_train" in varying:
        varying.remove("n_train")  # the fraction says it
    return varying or cols[:1]


def region_lines(regions: pd.DataFrame) -> list[str]:
    """'regions: 2 of 9 configurations reach all three (width=0.25 fraction=1, ...)' for the terminal."""
    labels = _region_labels(regions)
    full = [
        " ".join(f"{c}={_fmt(r[c])}" for c in labels)
        for r in regions.to_dict(orient="records")
        if len(reached_regions(r)) == 3
    ]
    high = int((regions["high"] >= 1).sum())
    shown = "; ".join(full[:6]) + ("; …" if len(full) > 6 else "")
    line = (
        f"regions: {len(full)} of {len(regions)} configurations reach all three (low plateau, power law, "
        f"high plateau){': ' + shown if full else ''}; {high} reach the high-error plateau"
    )
    return [line]


def region_markdown(regions: pd.DataFrame, chance: float | None) -> list[str]:
    labels = _region_labels(regions)
    out = [
        "Points (seed means) per region: low = within noise of ε_np (the low-error plateau), high = within 5 % "
        f"of chance{f' ({chance:.3g})' if chance else ' (unknown: pass classes=)'}, power = in between.",
        "",
        "| " + " | ".join(labels + REGION_HEADER) + " |",
        "|" + "---|" * (len(labels) + len(REGION_HEADER)),
    ]
    for r in regions.to_dict(orient="records"):
        out.append("| " + " | ".join([_fmt(r[c]) for c in labels] + _region_cells(r)) + " |")
    return out


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
