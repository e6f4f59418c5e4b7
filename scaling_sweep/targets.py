"""User components named by `_target_`: which sections hold one, importing them safely, checking their signatures, hashing their source, and where they import from."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import TARGET, DataOptions
from scaling_sweep.schema import label as label  # re-exported: what rows and screens call a component

# Where a trainer config may name a user component, and what the trainer passes it besides the
# section's own keys: (positional arguments, keyword arguments).
WHERE = ("model", "data", "train.step")
SUPPLIED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "model": ((), ("input_shape", "num_classes")),
    "data": ((), ()),
    "train.step": (("model", "x", "y"), ()),
}
# Data keys the tool itself consumes (the subset cut, the loader's plumbing): never passed to a
# user loader, except `root`, which is passed when it is set (it is where the data lives).
DATA_OWN_KEYS = frozenset(f.name for f in fields(DataOptions))
_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


@dataclass(frozen=True)
class Target:
    """One user component: where it is configured, the dotted path it names, the keywords the section gives it."""

    where: str  # "model", "data" or "train.step"
    path: str  # "mypkg.models.TinyViT": module, then a class or function defined in it
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def label(self) -> str:
        return self.path.rpartition(".")[2]

    def key(self) -> tuple:
        """Hashable: one signature check per distinct component and keywords."""
        return (self.where, self.path, repr(sorted(self.kwargs.items())))


def section(config: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    """The config section `where` ("train.step" is nested), or None."""
    node: Any = config
    for part in where.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def find(config: Mapping[str, Any]) -> dict[str, Target]:
    """The user components of a trainer config {model, data, train, prune, seed}, by where they sit."""
    out: dict[str, Target] = {}
    for where in WHERE:
        values = section(config, where)
        if values is None or values.get(TARGET) is None:
            continue
        path = values[TARGET]
        if not isinstance(path, str) or not _PATH.fullmatch(path):
            raise ConfigError(
                f"{where}.{TARGET}={path!r}: name a class or function as module.name, e.g. mypkg.models.TinyViT"
            )
        out[where] = Target(where, path, _kwargs(where, values))
    return out


def _kwargs(where: str, values: Mapping[str, Any]) -> dict[str, Any]:
    if where == "model":
        return {k: v for k, v in values.items() if k not in (TARGET, "name")}
    if where == "data":
        kw = {k: v for k, v in values.items() if k != TARGET and k not in DATA_OWN_KEYS}
        if values.get("root") is not None:
            kw["root"] = values["root"]
        return kw
    return {k: v for k, v in values.items() if k != TARGET}


# -- importing --------------------------------------------------------------------------------


def resolve(target: Target) -> Any:
    """Import the class or function a target names.

    Refused: anything from Python's standard library (a shared sweep file must not be able to name
    os.system), and objects that are not a class or a Python function defined in the named module
    (re-exports would let a harmless-looking module hand out something else).
    """
    top = target.path.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise ConfigError(
            f"{target.where}.{TARGET}={target.path}: {top} is Python's standard library; "
            f"name your own class or function (e.g. mypkg.models.TinyViT)"
        )
    try:
        module = importlib.import_module(target.module)
    except ImportError as e:
        raise ConfigError(
            f"{target.where}.{TARGET}={target.path}: cannot import {target.module} ({e}); run from the "
            f"directory that holds it, add that directory to PYTHONPATH, or pass --config-dir"
        ) from e
    missing = object()
    obj = getattr(module, target.label, missing)
    if obj is missing:
        raise ConfigError(f"{target.where}.{TARGET}={target.path}: {target.module} has no {target.label!r}")
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ != target.module:
        where_defined = getattr(obj, "__module__", None)
        hint = f" (it is defined in {where_defined}; name it there)" if where_defined else ""
        raise ConfigError(
            f"{target.where}.{TARGET}={target.path}: must be a class or function defined in {target.module}{hint}"
        )
    return obj


def check(target: Target) -> Any:
    """Import the target and check that the section's keys fit its signature; returns the callable.

    The trainer calls it with SUPPLIED[where] plus the section's keys: a key it does not take, a
    parameter without default that nothing sets, or a section key that the trainer supplies
    itself stops the plan here, before any job starts.
    """
    obj = resolve(target)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # some C-implemented callables have none: nothing to check
        return obj
    positional, supplied = SUPPLIED[target.where]
    plain = sig.replace(
        parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
        return_annotation=sig.empty,
    )
    shown = f"{target.label}{plain}"
    for key in target.kwargs:
        if key in supplied or key in positional:
            raise ConfigError(
                f"{target.where}.{key}: the trainer passes {key} to {target.label} itself; remove it from the config"
            )
    params = list(sig.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    by_position = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(by_position) < len(positional) and not var_pos:
        raise ConfigError(
            f"{target.where}.{TARGET}={target.path}: {shown} must take ({', '.join(positional)}) as its "
            f"first arguments"
        )
    named = {
        p.name: p for p in params[len(positional) :] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    for key in [*supplied, *target.kwargs]:
        if key not in named and not var_kw:
            where = (
                f"{target.where}.{key}" if key in target.kwargs else f"{target.where}.{TARGET}={target.path}"
            )
            raise ConfigError(
                f"{where}: {shown} has no parameter {key!r}"
                + ("" if key in target.kwargs else f" (the trainer passes {', '.join(supplied)})")
            )
    for name, p in named.items():
        if p.default is p.empty and name not in target.kwargs and name not in supplied:
            raise ConfigError(f"{target.where}.{name} is not set: {shown} needs it (no default)")
    return obj


# -- identity ---------------------------------------------------------------------------------


def source_file(module: str) -> Path:
    """The file that holds a module's source, found without running any of it.

    importlib would import parent packages (running their __init__) to find a submodule; here only
    the top-level package is looked up through the import system, the rest is walked on disk.
    """
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__file__", None):
        return Path(loaded.__file__)
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ConfigError(
            f"cannot find module {module}: run from the directory that holds {top}, add it to PYTHONPATH, "
            f"or pass --config-dir"
        )
    if not rest:
        if not spec.origin or not os.path.isfile(spec.origin):
            raise ConfigError(f"module {module} has no source file to identify it by")
        return Path(spec.origin)
    for location in spec.submodule_search_locations or []:
        base = Path(location, *rest[:-1])
        for candidate in (base / f"{rest[-1]}.py", base / rest[-1] / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"cannot find the source of {module} in {top} ({', '.join(spec.submodule_search_locations or [])})"
    )


def code_hash(module: str) -> str:
    """sha256 (16 hex digits) of a module's source file: an edited model is another job."""
    return hashlib.sha256(source_file(module).read_bytes()).hexdigest()[:16]


def code_of(config: Mapping[str, Any]) -> dict[str, str]:
    """{where: source hash} for each user component of a trainer config (empty for built-ins only)."""
    return {where: code_hash(t.module) for where, t in find(config).items()}


def verify(config: Mapping[str, Any], recorded: Mapping[str, str]) -> None:
    """Refuse to train when a component's source changed since the job was planned (its id would lie)."""
    now = code_of(config)
    for where, digest in recorded.items():
        if now.get(where) != digest:
            t = find(config)[where]
            raise ConfigError(
                f"{where}.{TARGET}={t.path}: {source_file(t.module)} changed since this job was planned "
                f"(source {now.get(where)} != {digest}); plan again (`scaling-sweep resume` plans the edited "
                f"code as new jobs)"
            )


# -- where user code imports from -------------------------------------------------------------


def import_paths(config_dirs: Sequence[str] = ()) -> list[str]:
    """Directories user modules may come from: the working directory, --config-dir, PYTHONPATH."""
    paths = [os.getcwd(), *config_dirs, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    out: list[str] = []
    for p in paths:
        if p and os.path.abspath(p) not in out:
            out.append(os.path.abspath(p))
    return out


def activate(paths: Sequence[str]) -> None:
    """Make those directories importable (appended: what this interpreter already finds comes first)."""
    for p in paths:
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    importlib.invalidate_caches()
