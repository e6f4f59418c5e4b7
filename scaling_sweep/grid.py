"""Grid axes (cartesian product, zipped groups, drop/keep filters) -> JobSpecs, with IMP densities folded into trajectories."""

from __future__ import annotations

import itertools
from collections import ChainMap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scaling_sweep import schema, targets
from scaling_sweep.errors import ConfigError
from scaling_sweep.expr import Expr, ExprError
from scaling_sweep.expr import parse as parse_expr
from scaling_sweep.schema import SECTIONS, last_level
from scaling_sweep.spec import JobSpec, join_canonical, section_json

RESERVED = ("zip", "drop", "keep")
# Quantities a filter may read besides the options, computed per point only when a filter names them:
# trainable parameters and forward FLOPs of one example (the model counted on the meta device, for
# data whose input shape is known without loading), and training examples (schema.train_size).
DERIVED = ("params", "flops_per_example", "n_train")
# More points than this is a typo (a range too long, a zip forgotten) long before it is a sweep:
# 10^8 points took 70 s and then a MemoryError. Counted from the axis lengths, before expanding.
MAX_POINTS = 100_000
# Axes that IMP reaches along one trajectory rather than as separate trainings.
FOLDED_AXES = ("prune.density", "prune.levels")


@dataclass
class Plan:
    """What a grid expands to: the trajectory jobs and how grid points were folded into them."""

    specs: list[JobSpec]
    n_points: int  # grid points after zip/drop, densities counted separately
    axes: dict[str, list[Any]]  # axis path -> its values, in grid order
    folded: int  # grid points that were merged into another point's IMP trajectory


def flatten_axes(
    grid: Mapping[str, Any], base: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, list[Any]]:
    """{"model": {"width": [1, 2]}, "seed": [0]} -> {"model.width": [1, 2], "seed": [0]}."""
    out: dict[str, list[Any]] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = list(node) if isinstance(node, (list, tuple)) else [node]

    for k, v in grid.items():
        if k not in RESERVED:
            walk(k, v)
    for path, values in out.items():
        _check_path(path, base)
        if not values:
            raise ConfigError(f"grid.{path}=[]: an axis needs at least one value")
    return out


def _user_key(path: str, base: Mapping[str, Mapping[str, Any]] | None) -> bool:
    """An axis over a key of a user model's or dataset's own (checked against its signature instead)."""
    section, _, key = path.partition(".")
    own = base is not None and section in ("model", "data") and schema.TARGET in base.get(section, {})
    return own and key not in schema.field_types(section) and key != schema.TARGET


def _coerce(path: str, value: Any, base: Mapping[str, Mapping[str, Any]]) -> Any:
    if not _user_key(path, base):
        return schema.coerce(path, value, where="grid.")
    # A user key takes the type of the base config's value (width 1 next to a base of 0.5 is 1.0).
    section, _, key = path.partition(".")
    current = base[section].get(key)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_path(path: str, base: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    if path == "seed" or _user_key(path, base):
        return
    section, _, key = path.partition(".")
    if section not in SECTIONS or not key or "." in key:
        raise ConfigError(
            f"grid.{path}: axes are seed or <section>.<option> with section one of {', '.join(SECTIONS)}"
        )
    if key not in schema.field_types(section):
        known = ", ".join(sorted(schema.field_types(section)))
        raise ConfigError(f"grid.{path}: {section} has no option {key!r}; known: {known}")


def _zip_groups(grid: Mapping[str, Any], axes: Mapping[str, list[Any]]) -> list[list[str]]:
    groups = []
    seen: set[str] = set()
    for group in grid.get("zip") or []:
        group = [str(g) for g in group]
        for g in group:
            if g not in axes:
                raise ConfigError(f"grid.zip names {g!r}, which is not an axis; axes: {', '.join(axes)}")
            if g in seen:
                raise ConfigError(f"grid.zip names {g!r} twice; an axis can be in one zipped group")
            seen.add(g)
        lengths = {len(axes[g]) for g in group}
        if len(lengths) > 1:
            sizes = ", ".join(f"{g}: {len(axes[g])}" for g in group)
            raise ConfigError(f"grid.zip group [{', '.join(group)}] has axes of different lengths ({sizes})")
        groups.append(group)
    return groups


def _names(base: Mapping[str, Mapping[str, Any]], seed: int) -> dict[str, Any]:
    """The names a drop filter may read at the base config: `model.width`, ..., `seed`."""
    names = {f"{s}.{k}": v for s in SECTIONS for k, v in base[s].items()}
    names["seed"] = seed
    return names


def _compile_filters(grid: Mapping[str, Any], kind: str, names: Mapping[str, Any]) -> list[Expr]:
    """The expressions of grid.drop or grid.keep (one string or a list), parsed and their names checked."""
    texts = grid.get(kind) or []
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for text in texts:
        text = str(text)
        try:
            expr = parse_expr(text, dotted=True)
            expr.check_names([*names, *DERIVED])  # a typo stops the plan here, before any point is judged
        except ExprError as e:
            raise ConfigError(f"grid.{kind} {text!r}: {e}") from e
        out.append(expr)
    return out


def _excluded(drops: Sequence[Expr], keeps: Sequence[Expr], names: Mapping[str, Any]) -> bool:
    """Whether a point is left out: some drop filter holds, or some keep filter does not."""
    for kind, exprs, leaves_out in (("drop", drops, True), ("keep", keeps, False)):
        for expr in exprs:
            try:
                if bool(expr.evaluate(names)) == leaves_out:
                    return True
            except ExprError as e:  # a filter that fails must stop the plan, not silently keep points
                raise ConfigError(f"grid.{kind} {expr.source!r}: {e}") from e
            except _NotKnown as e:
                raise ConfigError(f"grid.{kind} {expr.source!r}: {e}") from None
    return False


class _NotKnown(Exception):
    """A derived quantity that cannot be computed for a point (not an ExprError: the filter is fine)."""


class _PointNames(Mapping):
    """A point's filter names: its options, and the derived quantities, each computed when first read."""

    def __init__(self, names: Mapping[str, Any], derive: Any) -> None:
        self.names, self.derive = names, derive

    def __getitem__(self, key: str) -> Any:
        return self.derive(key) if key in DERIVED else self.names[key]

    def __contains__(self, key: object) -> bool:
        return key in DERIVED or key in self.names

    def __iter__(self) -> Iterator[str]:
        yield from self.names
        yield from DERIVED

    def __len__(self) -> int:
        return len(self.names) + len(DERIVED)


class _Derived:
    """`params`, `flops_per_example` and `n_train` of grid points, computed once per distinct model and data.

    torch is imported (through train.census) only when a filter reads params or flops_per_example.
    """

    def __init__(self, builder: _Builder, base_prune: Mapping[str, Any], check_code: bool) -> None:
        self.builder, self.base_prune, self.check_code = builder, base_prune, check_code
        self.counted: dict[tuple[str, str, bool], Any] = {}

    def names(self, choice: Sequence[int], names: Mapping[str, Any]) -> _PointNames:
        return _PointNames(names, lambda key: self.value(key, choice))

    def value(self, key: str, choice: Sequence[int]) -> Any:
        data = self.builder.section("data", choice)[0]
        if key == "n_train":
            n = None if schema.TARGET in data else schema.train_size(schema.parse("data", data))
            if n is None:
                raise _NotKnown(
                    f"n_train of data {schema.label(data)!r} is known only once it is loaded (known without "
                    f"loading: {', '.join(schema.TRAIN_SIZES)}, unless data.balanced)"
                )
            return n
        model, model_json = self.builder.section("model", choice)
        flops = key == "flops_per_example"
        cache_key = (model_json, str(data.get("name")), flops)  # built-in data: the name fixes the shape
        if cache_key not in self.counted:
            self.counted[cache_key] = self._count(model, data, flops)
        counted = self.counted[cache_key]
        return counted.flops_per_example if flops else counted.params_trainable

    def _count(self, model: Mapping[str, Any], data: Mapping[str, Any], flops: bool) -> Any:
        from scaling_sweep.train import census  # torch: only a filter that reads these needs it

        if census.input_spec(data) is None:
            raise _NotKnown(
                f"params and flops_per_example need the input shape of data {schema.label(data)!r}, known "
                f"only once it is loaded (known without loading: {', '.join(census.SHAPES)})"
            )
        config = {"model": model, "data": data, "prune": self.base_prune}
        found = targets.find(config).get("model")
        if found is not None:
            if not self.check_code:
                raise _NotKnown(
                    f"params and flops_per_example of a user model ({found.path}) need its code, "
                    f"which this command does not import"
                )
            targets.check(found)
        counted = census.census(config, flops=flops)
        assert counted is not None  # the input shape is known (checked above)
        return counted


class _Builder:
    """Builds JobSpecs from a choice of one element per grid unit, merging and rendering each
    distinct section once: a section's values depend only on the choices of the units that set it."""

    def __init__(
        self,
        base: Mapping[str, Mapping[str, Any]],
        units: Sequence[Sequence[Mapping[str, Any]]],
        default_seed: int,
    ) -> None:
        self.base = base
        self.units = units
        self.touch = {
            s: [u for u, unit in enumerate(units) if any(p.startswith(s + ".") for p in unit[0])]
            for s in SECTIONS
        }
        self.seed_unit = next((u for u, unit in enumerate(units) if "seed" in unit[0]), None)
        self.default_seed = default_seed
        # (section, unit choices, extra) -> (that section's values, its canonical JSON). Specs share
        # the values dicts, which is safe because nothing mutates a spec's sections.
        self.distinct: dict[tuple, tuple[dict[str, Any], str]] = {}
        self.hashes: dict[str, str] = {}  # module -> source hash
        self.components: dict[tuple, targets.Target] = {}  # distinct user components, checked once each
        self._code: dict[tuple[int, int, int], dict[str, str]] = {}

    def code(self, sections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """{where: source hash} of the user components among these sections (empty for built-ins)."""
        key = (id(sections["model"]), id(sections["data"]), id(sections["train"]))
        hit = self._code.get(key)
        if hit is None:
            found = targets.find(sections)
            for t in found.values():
                self.components.setdefault(t.key(), t)
                if t.module not in self.hashes:
                    self.hashes[t.module] = targets.code_hash(t.module)
            hit = self._code[key] = {where: self.hashes[t.module] for where, t in found.items()}
        return hit

    def section(
        self,
        s: str,
        choice: Sequence[int],
        extra: Mapping[str, Any] | None = None,
        skip: frozenset[int] = frozenset(),
    ) -> tuple[dict[str, Any], str]:
        """Section `s` at this choice, with `extra` options on top; units in `skip` do not matter
        to it (their options are all overwritten by `extra`)."""
        touched = [u for u in self.touch[s] if u not in skip] if skip else self.touch[s]
        key = (s, tuple(choice[u] for u in touched), tuple(extra.items()) if extra else ())
        hit = self.distinct.get(key)
        if hit is None:
            values = dict(self.base[s])
            for u in touched:
                for path, v in self.units[u][choice[u]].items():
                    section, _, option = path.partition(".")
                    if section == s:
                        values[option] = v
            values.update(extra or {})
            hit = self.distinct[key] = (values, section_json(s, values))
        return hit

    def build(
        self,
        choice: Sequence[int],
        axes: Mapping[str, Any],
        prune_extra: Mapping[str, Any] | None = None,
        skip: frozenset[int] = frozenset(),
    ) -> JobSpec:
        seed = self.default_seed
        if self.seed_unit is not None:
            seed = self.units[self.seed_unit][choice[self.seed_unit]]["seed"]
        sections: dict[str, Mapping[str, Any]] = {}
        parts: dict[str, str] = {}
        for s in SECTIONS:
            if s == "prune":
                sections[s], parts[s] = self.section(s, choice, prune_extra, skip)
            else:
                sections[s], parts[s] = self.section(s, choice)
        code = self.code(sections)
        spec = JobSpec(
            sections["model"],
            sections["data"],
            sections["train"],
            sections["prune"],
            seed,
            axes=axes,
            code=code,
        )
        return spec.preset_canonical(join_canonical(parts, seed, code))


def expand(cfg: Mapping[str, Any], check_paths: bool = True, check_code: bool = True) -> Plan:
    """Expand a composed sweep config (plain dict) into trajectory JobSpecs, validated.

    `check_code=False` neither imports nor checks user components (`_target_`): commands that
    only read a sweep (status, fit) run no code named in it. Their source hashes (part of the job
    ids) are read from disk either way.
    """
    # model and data are untyped in the composed config: the schema gives them defaults and types.
    base = {s: schema.normalize(s, cfg[s]) for s in SECTIONS}
    default_seed = int(cfg["seed"])
    grid = dict(cfg.get("grid") or {})
    axes = flatten_axes(grid, base)
    axes = {p: [_coerce(p, v, base) for v in vals] for p, vals in axes.items()}
    groups = _zip_groups(grid, axes)
    zipped = {g for group in groups for g in group}
    # A unit is one zipped group or one lone axis; its elements are the values it takes together.
    units: list[list[dict[str, Any]]] = [
        [dict(zip(group, vals)) for vals in zip(*(axes[g] for g in group))] for group in groups
    ]
    units += [[{p: v} for v in vals] for p, vals in axes.items() if p not in zipped]
    _check_size(units)
    _check_duplicates(units)
    base_names = _names(base, default_seed)
    drops = _compile_filters(grid, "drop", base_names)
    keeps = _compile_filters(grid, "keep", base_names)
    builder = _Builder(base, units, default_seed)
    derived = None
    if any(set(DERIVED) & e.names for e in (*drops, *keeps)):
        derived = _Derived(builder, base["prune"], check_code)

    by_id: dict[str, JobSpec] = {}
    n_points = 0
    # IMP reaches every density of a trajectory in one job: points that differ only in
    # prune.density / prune.levels fold into one job that runs to the deepest level asked for.
    # A point's trajectory is named by its choices in the units that hold no folded axis.
    kept_units = [i for i, u in enumerate(units) if not set(u[0]) <= set(FOLDED_AXES)]
    folded_units = frozenset(range(len(units))) - set(kept_units)
    prune_varies = bool(builder.touch["prune"])
    base_levels = last_level(base["prune"]) if base["prune"]["method"] == "imp" else 0
    trajectories: dict[tuple, tuple[tuple[int, ...], dict[str, Any], int]] = {}
    for choice in itertools.product(*(range(len(u)) for u in units)):
        point: dict[str, Any] = {}
        for unit, i in zip(units, choice):
            point.update(unit[i])
        # The point's axes (dotted paths and seed, the filter's own names) over the base config.
        if drops or keeps:
            names: Mapping[str, Any] = ChainMap(point, base_names)
            if derived is not None:
                names = derived.names(choice, names)
            if _excluded(drops, keeps, names):
                continue
        n_points += 1
        prune = builder.section("prune", choice)[0] if prune_varies else base["prune"]
        if prune["method"] == "imp":
            key = tuple(choice[i] for i in kept_units)
            levels = last_level(prune) if prune_varies else base_levels
            if key in trajectories:
                levels = max(levels, trajectories[key][2])
            trajectories[key] = (choice, point, levels)
        else:
            spec = builder.build(choice, point)
            by_id.setdefault(spec.job_id, spec)

    for choice, point, levels in trajectories.values():
        shown = {k: v for k, v in point.items() if k not in FOLDED_AXES}
        shown["prune.levels"] = levels
        spec = builder.build(choice, shown, {"levels": levels, "density": None}, folded_units)
        by_id.setdefault(spec.job_id, spec)

    if not by_id:
        raise ConfigError(
            "the grid is empty: every point was left out by grid.drop or grid.keep, or an axis has no values"
        )
    specs = list(by_id.values())
    # Checks are per section and a grid's jobs share most sections: each distinct one is checked once.
    for (section, *_), (values, _) in builder.distinct.items():
        schema.check(section, values, check_paths)
    _check_rewinds(specs)
    if check_code:
        for component in builder.components.values():
            targets.check(component)
    return Plan(specs=specs, n_points=n_points, axes=axes, folded=n_points - len(specs))


def _check_size(units: Sequence[Sequence[Any]]) -> None:
    n = 1
    for unit in units:
        n *= len(unit)
    if n > MAX_POINTS:
        sizes = " x ".join(f"{len(u)} ({', '.join(u[0])})" for u in units if len(u) > 1)
        raise ConfigError(
            f"the grid has {n:,} points ({sizes}), more than the limit of {MAX_POINTS:,}; "
            f"shorten an axis, zip axes that vary together (grid.zip) or split the sweep"
        )


def _check_duplicates(units: Sequence[Sequence[Mapping[str, Any]]]) -> None:
    # A repeated value would be the same jobs twice: refuse it rather than fold it silently
    # (values are compared after coercion, so width 1 and 1.0 are one value).
    for unit in units:
        seen: set[str] = set()
        for element in unit:
            key = repr(sorted(element.items()))
            if key in seen:
                shown = ", ".join(f"grid.{p}={v!r}" for p, v in element.items())
                raise ConfigError(f"{shown} is listed twice; list each value of an axis once")
            seen.add(key)


def _check_rewinds(specs: Sequence[JobSpec]) -> None:
    # The rewind point needs data, train and prune together, so it is checked per job; specs share
    # their section dicts, so each distinct combination is checked once.
    seen: set[tuple[int, int, int]] = set()
    for spec in specs:
        key = (id(spec.data), id(spec.train), id(spec.prune))
        if key not in seen:
            seen.add(key)
            schema.check_rewind(*(schema.parse(s, getattr(spec, s)) for s in ("data", "train", "prune")))
