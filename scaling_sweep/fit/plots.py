"""Figures: measured curves (error vs density, vs n_train, vs params), with the fitted laws laid over them when given."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

# Figures are built with matplotlib's object API and saved through the Agg canvas, so importing this module
# never switches the backend of a user's own pyplot session.
from matplotlib import colormaps, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from scaling_sweep.fit import forms
from scaling_sweep.fit.quality import LawFit
from scaling_sweep.fit.table import Points
from scaling_sweep.fit.verdict import PLATEAU_MARGIN, classify

FIGSIZE_IN, DPI = (10.0, 20.0 / 3.0), 120  # every PNG is 1200 x 800 pixels
SIZE_PX = (1200, 800)
MARKERS = "osD^vP<>Xh"
LAW_MARKERS = {"power": "^", "rosenfeld2020": "s", "pruning2021": "o", "pruning2021/config": "D"}
LAW_COLORS = {
    "power": "tab:gray",
    "rosenfeld2020": "tab:blue",
    "pruning2021": "tab:red",
    "pruning2021/config": "tab:green",
}
Say = Callable[[str], None]


def measured_figures(points: Points, out_dir: Path, say: Say, chance: float | None = None) -> list[Path]:
    """The measured curves only: error vs density per configuration, vs n_train per width, vs params per fraction."""
    return _all(points, out_dir, say, fits={}, prefix="", chance=chance)


def fit_figures(
    points: Points, fits: Mapping[str, LawFit], out_dir: Path, say: Say, chance: float | None = None
) -> list[Path]:
    """Measured curves with the fitted laws, the collapse against m*, and predicted vs measured."""
    paths = _all(points, out_dir, say, fits=fits, prefix="fit_", chance=chance)
    if "pruning2021" in fits:
        say("plotting the collapse against m*")
        paths.append(collapse(points, fits["pruning2021"], out_dir / "fit_collapse.png"))
    if fits:
        say("plotting predicted vs measured")
        paths.append(predicted_vs_measured(fits, out_dir / "fit_predicted_vs_measured.png"))
    return paths


def _all(
    points: Points, out_dir: Path, say: Say, *, fits: Mapping[str, LawFit], prefix: str, chance: float | None
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    say("plotting error vs density")
    paths.append(density_curves(points, out_dir / f"{prefix}error_vs_density.png", fits, chance))
    say("plotting error vs training-set size")
    paths.append(size_curves(points, out_dir / f"{prefix}error_vs_n_train.png", "n_train", fits))
    say("plotting error vs parameter count")
    paths.append(size_curves(points, out_dir / f"{prefix}error_vs_params.png", "params_total", fits))
    return [p for p in paths if p is not None]


# ---------------------------------------------------------------- styling shared by the figures


class Style:
    """Colour by width, marker by depth, so a legend of widths plus depths names every configuration."""

    def __init__(self, frame: pd.DataFrame):
        self.widths = sorted(frame["width"].dropna().unique()) if "width" in frame else []
        self.depths = sorted(frame["depth"].dropna().unique()) if "depth" in frame else []
        cmap = colormaps["viridis"]
        n = max(len(self.widths), 1)
        self._colors = {w: cmap(0.9 * i / max(n - 1, 1)) for i, w in enumerate(self.widths)}

    def color(self, rows: pd.DataFrame):
        return self._colors.get(rows["width"].iloc[0], "tab:blue") if self.widths else "tab:blue"

    def marker(self, rows: pd.DataFrame) -> str:
        if not self.depths:
            return "o"
        return MARKERS[self.depths.index(rows["depth"].iloc[0]) % len(MARKERS)]

    def handles(self) -> list[Line2D]:
        out = [
            Line2D([], [], color=c, marker="o", lw=2, label=f"width {_value(w)}")
            for w, c in self._colors.items()
        ]
        if len(self.depths) > 1:
            out += [
                Line2D(
                    [], [], color="black", marker=MARKERS[i % len(MARKERS)], lw=0, label=f"depth {_value(d)}"
                )
                for i, d in enumerate(self.depths)
            ]
        return out


def _figure(panels: int) -> tuple[Figure, list]:
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _log_axes(ax) -> None:
    """Log-log with plain numbers; call after plotting, since which minor ticks get labels depends on the range."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.autoscale_view()
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_major_formatter(ticker.FuncFormatter(_number))
        # Errors often span less than a decade, where one major tick at most shows: label minor ticks too.
        decades = np.log10(hi / lo) if lo > 0 and hi > lo else 99
        if decades < 0.7:
            axis.set_minor_locator(ticker.LogLocator(subs=(1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)))
        minor = _number if decades < 0.7 else _number_235 if decades < 1.6 else None
        axis.set_minor_formatter(ticker.FuncFormatter(minor) if minor else ticker.NullFormatter())
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)


def _number(v: float, _pos=None) -> str:
    if v <= 0:
        return ""
    if 1e-3 <= v < 1e5:
        return f"{v:g}"
    exp = int(np.floor(np.log10(v) + 1e-9))
    mant = v / 10**exp
    return f"$10^{{{exp}}}$" if abs(mant - 1) < 1e-6 else f"${mant:g}\\times10^{{{exp}}}$"


def _value(v: float) -> str:
    """A legend value: counts with thousands separators, multipliers to 3 significant digits."""
    v = float(v)
    return f"{v:,.0f}" if v >= 1000 and v == round(v) else f"{v:.3g}"


def _number_235(v: float, _pos=None) -> str:
    mant = v / 10 ** np.floor(np.log10(v) + 1e-9) if v > 0 else 0
    return _number(v) if any(abs(mant - m) < 1e-6 for m in (2, 3, 5)) else ""


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)
    return path


def _errorbar(
    ax, rows: pd.DataFrame, x: str, color, marker: str, *, line: bool, label: str | None = None
) -> None:
    y = rows["test_error"].to_numpy(dtype=float)
    std = rows["seed_std"].fillna(0.0).to_numpy(dtype=float) if rows["runs"].max() > 1 else np.zeros_like(y)
    yerr = np.vstack([np.minimum(std, 0.9 * y), std])  # a log axis cannot show a bar reaching zero
    ax.errorbar(
        rows[x],
        y,
        yerr=yerr if std.any() else None,
        fmt=marker + ("-" if line else ""),
        color=color,
        ms=4,
        lw=0.8,
        elinewidth=0.8,
        capsize=2,
        alpha=0.9,
        label=label,
    )


def _panels(frame: pd.DataFrame) -> tuple[str | None, list]:
    for col in ("n_train", "data_fraction"):
        if col in frame and frame[col].nunique() > 0:
            return col, sorted(frame[col].dropna().unique())
    return None, [None]


def _panel_title(col: str | None, value) -> str:
    if col is None:
        return ""
    return f"n_train = {value:,.0f}" if col == "n_train" else f"data fraction = {_value(value)}"


# ---------------------------------------------------------------- the figures


def density_curves(
    points: Points, path: Path, fits: Mapping[str, LawFit], chance: float | None = None
) -> Path | None:
    """Error vs density, one line per configuration, one panel per training-set size (log-log).

    The regions show: hollow markers sit on the low-error plateau (within noise of ε_np), filled ones above it,
    and the shaded band is the high-error plateau (within 5 % of chance)."""
    frame = points.frame
    if "density" not in frame or frame["density"].round(9).nunique() < 2:
        return None
    known = np.isfinite(frame["eps_np"])
    low = np.zeros(len(frame), dtype=bool)
    low[known.to_numpy()] = classify(frame[known], chance) == "low"
    frame = frame.assign(_low=low)
    joint, per_config = fits.get("pruning2021"), fits.get("pruning2021/config")
    col, values = _panels(frame)
    fig, axes = _figure(len(values))
    style = Style(frame)
    for ax, value in zip(axes, values):
        sub = frame if col is None else frame[frame[col] == value]
        for _, rows in sub.groupby("config", sort=True):
            color, marker = style.color(rows), style.marker(rows)
            _errorbar(ax, rows, "density", color, marker, line=not (joint or per_config))
            plateau = rows[rows["_low"]]
            ax.scatter(
                plateau["density"],
                plateau["test_error"],
                marker=marker,
                s=18,
                facecolors="white",
                edgecolors=[color],
                linewidths=0.9,
                zorder=3,
            )
            grid = np.geomspace(rows["density"].min() / 1.5, 1.0, 120)
            curve = rows.iloc[[0] * len(grid)].assign(density=grid)
            if joint is not None and np.isfinite(rows["eps_np"].iloc[0]):
                ax.plot(grid, joint.predict(curve), color=color, lw=1.4)
            if per_config is not None:
                y = per_config.predict(curve)
                if np.isfinite(y).all():
                    ax.plot(grid, y, color=color, lw=1.0, ls=":")
        if chance is not None:
            ax.axhspan((1 - PLATEAU_MARGIN) * chance, chance, color="0.5", alpha=0.15, lw=0)
            ax.axhline(chance, color="0.4", ls="--", lw=0.8)
        _log_axes(ax)
        ax.set_title(_panel_title(col, value))
        ax.set_xlabel("density (fraction of weights kept)")
        ax.set_ylabel("test error")
    handles = style.handles()
    handles.append(
        Line2D([], [], color="black", marker="o", mfc="white", lw=0, label="low-error plateau (open)")
    )
    if chance is not None:
        handles.append(
            Patch(color="0.5", alpha=0.3, label=f"within {PLATEAU_MARGIN:.0%} of chance ({chance:.3g})")
        )
    if joint is not None:
        handles.append(Line2D([], [], color="black", lw=1.4, label="joint law (2021)"))
    if per_config is not None:
        handles.append(Line2D([], [], color="black", lw=1.0, ls=":", label="law per configuration"))
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle("Test error vs density" + (" with the fitted pruning law" if joint or per_config else ""))
    return _save(fig, path)


def size_curves(points: Points, path: Path, x: str, fits: Mapping[str, LawFit]) -> Path | None:
    """Dense error vs n_train (one line per model) or vs params_total (one line per training-set size)."""
    frame = points.frame[points.frame["dense"]]
    if x not in frame or frame[x].nunique() < 2:
        return None
    if x == "n_train":
        line_cols = [c for c in ("depth", "width") if c in frame] or (
            ["params_total"] if "params_total" in frame else []
        )
    else:
        line_cols = (
            ["n_train"] if "n_train" in frame else (["data_fraction"] if "data_fraction" in frame else [])
        )
    surface = fits.get("rosenfeld2020")
    power = fits.get("power")
    fig, (ax,) = _figure(1)
    style = Style(frame)
    lines = frame.groupby(line_cols, sort=True) if line_cols else [((), frame)]
    cmap = colormaps["plasma"]
    n_lines = frame.groupby(line_cols).ngroups if line_cols else 1
    for i, (key, rows) in enumerate(lines):
        rows = rows.sort_values(x)
        if x == "n_train":
            color, marker, label = style.color(rows), style.marker(rows), None
        else:
            color, marker = cmap(0.85 * i / max(n_lines - 1, 1)), "o"
            label = _line_label(line_cols, key)
        _errorbar(ax, rows, x, color, marker, line=surface is None, label=label)
        if surface is not None:
            grid = np.geomspace(frame[x].min() / 1.3, frame[x].max() * 1.3, 120)
            curve = rows.iloc[[0] * len(grid)].assign(**{x: grid})
            ax.plot(grid, surface.predict(curve), color=color, lw=1.4)
    if power is not None and power.label.get("axis") == x:
        grid = np.geomspace(frame[x].min() / 1.3, frame[x].max() * 1.3, 120)
        ax.plot(
            grid,
            power.predict(pd.DataFrame({x: grid})),
            color="black",
            lw=1.2,
            ls="--",
            label=f"power law ({_slice_text(power)})",
        )
    _log_axes(ax)
    ax.set_xlabel("training examples (n_train)" if x == "n_train" else "parameters (params_total)")
    ax.set_ylabel("test error (dense)")
    handles = style.handles() if x == "n_train" else ax.get_legend_handles_labels()[0]
    if x == "n_train":
        handles += [h for h in ax.get_legend_handles_labels()[0] if isinstance(h, Line2D)]
    if surface is not None:
        handles.append(Line2D([], [], color="black", lw=1.4, label="2020 law ê(m, n)"))
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    what = "training-set size, per model" if x == "n_train" else "parameter count, per training-set size"
    ax.set_title(f"Dense test error vs {what}" + (", with the 2020 law" if surface is not None else ""))
    return _save(fig, path)


def _line_label(cols: list[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{'n' if c == 'n_train' else c} = {_value(v)}" for c, v in zip(cols, key))


def _slice_text(fit: LawFit) -> str:
    key = {k: v for k, v in fit.label.items() if k != "axis"}
    return ", ".join(f"{k} = {_value(v)}" for k, v in key.items()) or "all rows"


def collapse(points: Points, joint: LawFit, path: Path) -> Path:
    """Every point's ε/ε_np against m* = l^φ·w^ψ·d: configurations fall on one family of curves."""
    frame = joint.points
    params = {k: v for k, (v, _) in joint.params.items()} | joint.pinned
    phi, psi = params.get("phi", 0.0), params.get("psi", 0.0)
    depth = frame["depth"].to_numpy(dtype=float) if "depth" in frame else 1.0
    width = frame["width"].to_numpy(dtype=float) if "width" in frame else 1.0
    m_star = forms.invariant(frame["density"].to_numpy(dtype=float), depth, width, phi=phi, psi=psi)
    eps_np = frame["eps_np"].to_numpy(dtype=float)
    fig, (ax,) = _figure(1)
    lo, hi = float(eps_np.min()), float(eps_np.max())
    norm, cmap = Normalize(lo, hi if hi > lo else lo * 1.001), colormaps["viridis"]

    def shade(e: float):
        return cmap(norm(e))

    ax.scatter(
        m_star,
        frame["test_error"] / eps_np,
        c=[shade(e) for e in eps_np],
        s=14,
        alpha=0.85,
        edgecolors="none",
    )
    grid = np.geomspace(m_star.min() / 2, m_star.max() * 1.5, 200)
    for e in sorted({lo, float(np.median(eps_np)), hi}):
        y = forms.pruning2021(
            grid, eps_np=e, eps_up=params["eps_up"], gamma=params["gamma"], p=params["p_prime"]
        )
        ax.plot(grid, y / e, color=shade(e), lw=1.5, label=f"law at ε_np = {e:.3g}")
    _log_axes(ax)
    ax.set_xlabel("m* = depth^φ · width^ψ · density" + f"   (φ = {phi:.3g}, ψ = {psi:.3g})")
    ax.set_ylabel("test error / dense error ε_np")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="dense error ε_np of the configuration")
    ax.legend(fontsize="small", loc="upper right")
    ax.set_title("All configurations against the invariant m* (joint pruning law)")
    return _save(fig, path)


def predicted_vs_measured(fits: Mapping[str, LawFit], path: Path) -> Path:
    """Each law's prediction against the measured error, with the ±5 % band."""
    fig, (ax,) = _figure(1)
    lo, hi = np.inf, -np.inf
    for name, fit in fits.items():
        pts = fit.points
        ok = np.isfinite(pts["predicted"])
        ax.scatter(
            pts.loc[ok, "test_error"],
            pts.loc[ok, "predicted"],
            s=14,
            alpha=0.7,
            color=LAW_COLORS.get(name, None),
            marker=LAW_MARKERS.get(name, "o"),
            label=f"{name}: μ = {fit.mu * 100:+.1f}%, σ = {fit.sigma * 100:.1f}%",
        )
        lo = min(lo, pts["test_error"].min(), pts.loc[ok, "predicted"].min())
        hi = max(hi, pts["test_error"].max(), pts.loc[ok, "predicted"].max())
    grid = np.geomspace(lo / 1.1, hi * 1.1, 50)
    ax.fill_between(grid, grid * 0.95, grid * 1.05, color="gray", alpha=0.2, label="±5 %")
    ax.plot(grid, grid, color="black", lw=1)
    _log_axes(ax)
    ax.set_xlabel("measured test error")
    ax.set_ylabel("predicted test error")
    ax.legend(fontsize="small", loc="upper left")
    ax.set_title("Predicted vs measured")
    return _save(fig, path)
