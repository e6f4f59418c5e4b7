"""A sweep's growth: what a changed config may add (grid values, seeds, deeper pruning), the extensions appended to sweep.yaml, and the plan they make together."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaling_sweep import schema
from scaling_sweep.config import EXECUTION_TOP
from scaling_sweep.errors import ConfigError
from scaling_sweep.grid import Plan, expand
from scaling_sweep.spec import ADDED_OPTIONS, EXECUTION_KEYS, JobSpec, dotted

EXTENSIONS = "extensions"  # the key of sweep.yaml that holds them, after the first config
# Top-level keys that change where or how a sweep runs, not its numbers (marked on SweepConfig);
# the history is bookkeeping.
NOT_TRAINING = (*EXECUTION_TOP, EXTENSIONS)
# What an extension may change: the grid, and the depth of IMP trajectories (only deeper).
DEPTH = ("prune.levels", "prune.density")


def training_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two configs in what decides the trainings (grid included)."""

    def ignored(path: str, value: Any) -> bool:
        # Execution settings, and options added later while at their default (absent from a sweep.yaml
        # frozen before they existed): neither changes a job id, so neither is a change of training.
        section, _, key = path.partition(".")
        added = ADDED_OPTIONS.get(section, {})
        return key in EXECUTION_KEYS.get(section, ()) or (key in added and value == added[key])

    def relevant(cfg: Mapping[str, Any]) -> dict[str, Any]:
        flat = dotted({k: v for k, v in cfg.items() if k not in NOT_TRAINING})
        return {k: v for k, v in flat.items() if not ignored(k, v)}

    a, b = relevant(old), relevant(new)
    return [
        f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def variants(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sweep's config as first frozen, then as each extension left it (the last one is current)."""
    base = {k: copy.deepcopy(v) for k, v in cfg.items() if k != EXTENSIONS}
    out = [base]
    for ext in cfg.get(EXTENSIONS) or []:
        nxt = copy.deepcopy(out[-1])
        nxt["grid"] = copy.deepcopy(ext["grid"])
        nxt["prune"].update(ext.get("prune") or {})
        out.append(nxt)
    return out


def growth(current: Mapping[str, Any], new: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The extension that turns `current` into `new`, None if they train the same, or a one-line refusal.

    A sweep grows by grid values, seeds and axes (its past jobs stay in it) and by deeper IMP
    trajectories (each continues from its last level). Anything else would change trainings that
    are already done: that is a new sweep.
    """
    diff = training_diff(current, new)
    if not diff:
        return None
    other = [d for d in diff if not d.startswith("grid.") and not d.startswith(DEPTH)]
    if other:
        raise ConfigError(
            f"{where}: the change would alter trainings already in this sweep ({'; '.join(other[:3])}); a sweep "
            f"grows only by grid values, seeds and deeper pruning (prune.levels); start a new sweep with name=NEW"
        )
    old_depth, new_depth = schema.last_level(current["prune"]), schema.last_level(new["prune"])
    if new_depth < old_depth:
        raise ConfigError(
            f"{where}: prune.levels would go from {old_depth} to {new_depth} levels; a sweep only deepens "
            f"(its rows of deeper levels stay); start a new sweep with name=NEW for shallower trajectories"
        )
    entry: dict[str, Any] = {"grid": copy.deepcopy(new.get("grid") or {})}
    depth = {k.partition(".")[2]: new["prune"].get(k.partition(".")[2]) for k in DEPTH}
    if any(current["prune"].get(k) != v for k, v in depth.items()):
        entry["prune"] = depth
    entry["at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return entry


def trajectory_key(spec: JobSpec) -> str:
    """What names an IMP trajectory regardless of its length: the identity without prune.levels/density."""
    identity = spec.identity()
    identity["prune"] = {k: v for k, v in identity["prune"].items() if k not in ("levels", "density")}
    return json.dumps(identity, sort_keys=True)


@dataclass
class Grown:
    """The plan of every variant together, and where deepened trajectories continue from."""

    plan: Plan
    # job id of a deeper trajectory -> the shallower jobs of the same trajectory, deepest first: it
    # continues from the first of them that has a checkpoint
    origins: dict[str, list[str]] = field(default_factory=dict)


def plan_all(
    configs: Sequence[Mapping[str, Any]], check_paths: bool = True, check_code: bool = True
) -> Grown:
    """The union of every variant's jobs; an IMP trajectory asked for at several depths runs to the deepest.

    The shallower job is left out of the plan (its rows become the deeper job's first rows) and
    recorded as the deeper job's origin.
    """
    plans = [expand(c, check_paths=check_paths, check_code=check_code) for c in configs]
    if len(plans) == 1:
        return Grown(plans[0])
    chosen: dict[str, JobSpec] = {}  # trajectory key (IMP) or job id -> spec
    origins: dict[str, list[str]] = {}
    for p in plans:
        for spec in p.specs:
            key = trajectory_key(spec) if spec.prune.get("method") == "imp" else spec.job_id
            have = chosen.get(key)
            if have is None:
                chosen[key] = spec
            elif schema.last_level(spec.prune) > schema.last_level(have.prune):
                chosen[key] = spec
                origins[spec.job_id] = [have.job_id, *origins.pop(have.job_id, [])]
    specs = list(chosen.values())
    axes: dict[str, list[Any]] = {}
    for p in plans:
        for k, vals in p.axes.items():
            axes.setdefault(k, [])
            axes[k] += [v for v in vals if v not in axes[k]]
    n_points = max(p.n_points for p in plans)
    return Grown(
        Plan(
            specs=specs, n_points=max(n_points, len(specs)), axes=axes, folded=max(0, n_points - len(specs))
        ),
        origins,
    )
