"""The sweep's structured config (dataclasses in Hydra's ConfigStore) and composing it from `configs/`."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from scaling_sweep.errors import ConfigError
from scaling_sweep.schema import DataOptions, PruneOptions, TrainOptions, execution
from scaling_sweep.tracking import TrackingOptions
from scaling_sweep.tracking import options as tracking_options


@dataclass
class FitOptions:
    enabled: bool = True  # fit and plot at the end of `run`
    laws: list[str] = field(default_factory=lambda: ["power", "rosenfeld2020", "pruning2021"])
    train_on: str | None = None  # extrapolation: fit on rows matching this filter, test on the rest
    where: str | None = None  # fit only the rows matching this filter
    folds: int = 5  # k-fold cross-validation; 0: none
    bootstrap: int = 200  # replicates for the parameters' 95 % intervals; 0: none
    classes: int | None = None  # for chance = 1 − 1/classes when the dataset's name does not say


@dataclass
class SweepConfig:
    name: str = MISSING  # the sweep directory is out_dir/name
    out_dir: str = execution("results")
    seed: int = 0
    # Untyped, so that a user's own model or data (`_target_`) is not merged with our options (grid.expand
    # gives them their types); data holds every option but the name, so `data.cache_dir=/x` always works.
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(
        default_factory=lambda: {f.name: f.default for f in fields(DataOptions) if f.name != "name"}
    )
    train: TrainOptions = field(default_factory=TrainOptions)
    prune: PruneOptions = field(default_factory=PruneOptions)
    # Axes as lists under their config path (grid.model.width=[0.5,1,2], grid.seed=[0,1]);
    # grid.zip: groups of axes that vary together; grid.drop: conditions that drop a point.
    grid: dict[str, Any] = field(default_factory=dict)
    launcher: dict[str, Any] = execution(default_factory=dict)  # each launcher checks its own keys
    fit: FitOptions = execution(default_factory=FitOptions)
    # Trackers that mirror every job's rows (tracking=[tensorboard,mlflow,wandb]); resume may add one.
    tracking: TrackingOptions = execution(default_factory=TrackingOptions)
    # Densities at which the end-of-run summary table shows error.
    summary_densities: list[float] = execution(default_factory=lambda: [1.0, 0.512, 0.262])
    # A directory of finished jobs shared across sweeps (scaling_sweep.store): a job already done there
    # is copied in instead of trained, and every job finished here is added to it. None: no store.
    store: str | None = execution(None)


# Keys that change where or how a sweep runs, not its numbers: resume may override them.
EXECUTION_TOP = tuple(f.name for f in fields(SweepConfig) if f.metadata.get("execution"))


def config_dir() -> Path:
    """The `configs/` directory: inside the installed package, else the checkout's top level."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"  # a wheel carries configs/ as scaling_sweep/configs
    return installed if (installed / "config.yaml").is_file() else here.parent / "configs"


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)


def compose(overrides: Sequence[str], extra_config_dirs: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/config.yaml` with Hydra overrides; bad overrides become a one-line ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register()
    for o in overrides:
        if o.lstrip("+~").startswith(("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper")):
            raise ConfigError(
                f"{o}: scaling-sweep launches and sweeps itself; use launcher=local or launcher=slurm "
                f"(options under launcher.*, e.g. launcher.partition=gpu) and grid.* for the values to sweep"
            )
    overrides = _grid_sweeps_as_lists(list(overrides))
    for extra in extra_config_dirs:
        if not os.path.isdir(extra):  # Hydra only warns, and the groups it should hold go missing later
            raise ConfigError(f"--config-dir {extra}: no such directory")
        overrides.append(f"hydra.searchpath=[file://{os.path.abspath(extra)}]")
    try:
        with _ctrl_c_after(), initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from e
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    check_name(_name(cfg))
    _check_tracking(cfg)
    return cfg


@contextlib.contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends (composing takes well under a second): Hydra keeps global
    state that a KeyboardInterrupt halfway through leaves broken, and its cleanup then fails with an
    unrelated AttributeError instead of the interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers (and only it gets KeyboardInterrupt)
        return
    held: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if held:
            signal.raise_signal(signal.SIGINT)  # now, to whatever handled it before


# One directory under out_dir: no separators, nothing hidden, not `.` or `..`, safe in a shell.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: Any) -> str:
    """The sweep name if it is one safe path component (the sweep directory is out_dir/name)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"name={name!r}: a sweep name is one directory under out_dir: a letter or digit, then up to "
            f"127 letters, digits, '.', '_' or '-' (e.g. name=mnist1d_widths)"
        )
    return name


def _name(cfg: DictConfig) -> Any:
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return cfg.name
    except MissingMandatoryValue as e:
        raise ConfigError("name is not set: pass name=NAME (the sweep directory is out_dir/NAME)") from e
    except OmegaConfBaseException as e:  # an interpolation in name that does not resolve
        raise ConfigError(f"name: {_one_line(e)}") from e


def _grid_sweeps_as_lists(overrides: list[str]) -> list[str]:
    """Hydra's sweep syntax on a grid axis (grid.seed=range(0,10), grid.model.width=1,2,4) becomes a list;
    so does a bare `tracking=[...]`, which sets `tracking.to`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for line in overrides:
        try:
            (o,) = parser.parse_overrides([line])
        except HydraException as e:
            raise ConfigError(_one_line(e)) from e
        key = o.get_key_element()
        if _is_tracking_list(o):
            out.append(f"tracking.to=[{','.join(_literal(n) for n in _tracking_names(o))}]")
        elif o.is_sweep_override() and key.lstrip("+").startswith("grid."):
            _check_sweep(line, o.value())
            values = [v for v in o.sweep_iterator()]
            out.append(f"{key}=[{','.join(_literal(v) for v in values)}]")
        else:
            out.append(line)
    return out


def _check_sweep(line: str, sweep: Any) -> None:
    """Refuse sweeps a grid axis cannot be, before iterating them (a long range would fill memory)."""
    from hydra.core.override_parser.types import Glob, IntervalSweep, RangeSweep

    from scaling_sweep.grid import MAX_POINTS

    if isinstance(sweep, Glob):
        raise ConfigError(
            f"{line}: glob() picks config files, not values; list the values, e.g. grid.seed=[0,1,2]"
        )
    if isinstance(sweep, IntervalSweep):
        raise ConfigError(
            f"{line}: an interval has no list of values; list them or use range(start,stop,step)"
        )
    if isinstance(sweep, RangeSweep) and sweep.step:
        n = math.ceil((sweep.stop - sweep.start) / sweep.step)
        if n > MAX_POINTS:
            raise ConfigError(f"{line}: {n:,} values, more than a grid's limit of {MAX_POINTS:,} points")


def _literal(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'") + "'"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else repr(v)


def _one_line(e: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line, chained errors as one line: what failed, and why."""
    chain = []
    while e is not None:
        if str(e).strip():
            chain.append(str(e).strip())
        e = e.__cause__
    if not chain:
        return "invalid configuration"
    lines = chain[0].splitlines()
    msg = lines[0].strip()
    if "Available options" in chain[0]:
        options = []
        for ln in lines[lines.index(next(x for x in lines if x.startswith("Available options"))) + 1 :]:
            if not ln.startswith("\t"):
                break
            options.append(ln.strip())
        msg += f"; available: {', '.join(options)}"
    elif len(chain) > 1:
        msg += f" ({chain[-1].splitlines()[0].strip()})"
    return msg


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply Hydra-grammar `key=value` overrides to an already composed config (used by `resume`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        raise ConfigError(_one_line(e)) from e
    for o in parsed:
        if _is_tracking_list(o):
            OmegaConf.update(cfg, "tracking.to", _tracking_names(o), merge=False)
            continue
        if o.is_sweep_override():
            raise ConfigError(
                f"{o.input_line}: sweeps over values go in grid.* (e.g. grid.model.width=[1,2])"
            )
        key = o.get_key_element().lstrip("+~")
        if o.is_delete():
            raise ConfigError(f"{o.input_line}: deleting keys is not supported on resume")
        OmegaConf.update(cfg, key, o.value(), merge=False, force_add=o.is_add() or o.is_force_add())
    _check_tracking(cfg)
    return cfg


def _is_tracking_list(o: Any) -> bool:
    """`tracking=[tensorboard,mlflow]` (or `tracking=mlflow`, `tracking=a,b`, `tracking=[]`): the list of trackers."""
    return (
        o.get_key_element().lstrip("+") == "tracking"
        and not o.is_delete()
        and not isinstance(o.value(), dict)
    )


def _tracking_names(o: Any) -> list[str]:
    """The trackers a `tracking=...` shorthand names: what `tracking.to` is set to."""
    value = list(o.sweep_iterator()) if o.is_sweep_override() else o.value()
    return [] if value is None else [str(v) for v in (value if isinstance(value, list) else [value])]


def _check_tracking(cfg: DictConfig) -> None:
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.to_container(cfg.tracking, resolve=True) if "tracking" in cfg else None
    except OmegaConfBaseException as e:
        raise ConfigError(f"tracking: {_one_line(e)}") from e
    tracking_options(node)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def from_yaml(text: str) -> DictConfig:
    cfg = OmegaConf.create(text)
    assert isinstance(cfg, DictConfig)
    return cfg


def fit_options(overrides: Sequence[str]) -> dict[str, Any]:
    """`fit.KEY=VALUE` overrides checked against FitOptions (for fitting a table that is not a sweep)."""
    bad = [o for o in overrides if not o.lstrip("+").startswith("fit.")]
    if bad:
        raise ConfigError(
            f"{bad[0]!r}: fitting a table (not a sweep directory) takes only fit.* overrides, e.g. "
            f"fit.train_on='width <= 0.5' fit.classes=10"
        )
    try:
        cfg = OmegaConf.merge(
            OmegaConf.structured(FitOptions), OmegaConf.from_dotlist([o.lstrip("+")[4:] for o in overrides])
        )
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as e:
        raise ConfigError(f"fit options: {_one_line(e)}") from e
