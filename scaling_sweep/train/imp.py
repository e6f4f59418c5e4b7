"""The IMP driver: level after level, prune -> rewind -> train -> evaluate -> checkpoint -> emit; exact resume."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from scaling_sweep import schema, targets
from scaling_sweep.schema import JobOptions, PruneOptions
from scaling_sweep.targets import Target
from scaling_sweep.train import checkpoint
from scaling_sweep.train.data import TrainData, load_dataset
from scaling_sweep.train.loop import autocast, evaluate, train_steps
from scaling_sweep.train.models import build_model, build_user_model
from scaling_sweep.train.pruning import Masks, attach_masks, describe, param_counts
from scaling_sweep.train.schedule import Budget, Optimizer, make_optimizer
from scaling_sweep.train.seeds import derive_seed
from scaling_sweep.train.steps import make_step

METRIC_KEYS = (
    "level",
    "density",
    "n_train",
    "params_total",
    "params_prunable",
    "params_nonzero",
    "test_error",
    "test_loss",
    "train_error",
    "train_loss",
    "epochs",
    "steps",
    "budget_unit",
    "wall_s",
    "device",
)


class Interrupted(Exception):
    """stop() returned True; a checkpoint was saved first."""


class Levels(list):
    """What `run_imp` returns: every finished level's metrics, in order.

    `stopped` is None when the trajectory ran to its last level, else why it ended early:
    {"level": L (the last level trained), "reason": "chance" | "layer_empty", "detail": the log
    line, and "layer" for layer_empty}. A list, so callers that only want the rows need not care.
    """

    def __init__(self, levels: Iterable[dict[str, Any]] = (), stopped: dict[str, Any] | None = None) -> None:
        super().__init__(levels)
        self.stopped = stopped


def rewind_step(prune: PruneOptions, budget: Budget) -> int | None:
    """The step of the dense run whose weights pruned levels restart from (None: init or lr rewinding).

    Checked here too: the plan cannot count the steps of data whose size is known once loaded.
    """
    kind, _, k = prune.rewind.partition(":")
    if kind not in ("step", "epoch"):
        return None
    step = int(k) * (budget.steps_per_epoch if kind == "epoch" else 1)
    if step >= budget.total_steps:
        raise schema.rewind_outside(
            prune.rewind, step, budget.total_steps, f" ({budget.steps_per_epoch} per epoch)"
        )
    return step


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state (weights, BatchNorm statistics, masks)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], masks: Masks) -> None:
    """Load everything from `state` except the mask buffers, which stay as they are.

    Exactly `masks.keys`: a mask need not end in "weight_mask" (prune.include can pick `pos`), and
    a model's own buffer may (it is weights to restore like any other).
    """
    current, keep = model.state_dict(), set(masks.keys)
    model.load_state_dict({k: current[k] if k in keep else v for k, v in state.items()})


@dataclass
class Progress:
    """Where the job stands; exactly what a checkpoint stores besides model and optimizer."""

    levels: list[dict[str, Any]] = field(default_factory=list)  # metrics of finished levels
    level: int = 0
    step: int | None = None  # steps into this level's schedule; None: the level has not started
    wall_s: float = 0.0  # seconds spent on this level by earlier runs of the job
    init: dict[str, torch.Tensor] = field(default_factory=dict)  # weights at initialisation
    rewind: dict[str, torch.Tensor] | None = None  # weights at the rewind step of the dense run
    stopped: dict[str, Any] | None = None  # why the trajectory ended early (see `Levels`); None: it goes on


def build(opts: JobOptions, data: TrainData, device: torch.device, target: Target | None = None) -> nn.Module:
    """The model (ours, or the user's `model._target_` when `target` is given) with its seeded
    initialisation (drawn on the CPU, so it is the same on every device), masks attached."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(opts.seed, "init"))
        if target is None:
            model = build_model(opts.model, data.input_shape, data.num_classes)
        else:
            model = build_user_model(target, data.input_shape, data.num_classes)
    attach_masks(model, opts.prune.include_output_layer, opts.prune.include, opts.prune.exclude)
    model.to(device)
    if opts.train.channels_last and channels_last_pays(model, device):
        model.to(memory_format=torch.channels_last)
        data.channels_last = True
    return model


def channels_last_pays(model: nn.Module, device: torch.device) -> bool:
    """Whether channels-last memory speeds this model up on this device (2-D conv nets only).

    On CUDA it does. On CPU (oneDNN, torch 2.14) only when every conv has channel counts that
    are multiples of 8: ResNet-20 at 1 thread runs 2x faster at width 0.5, 1.3x at width 1,
    1.2x at width 2, but slower at 12 channels; and a strided 1x1 conv from 4 or 6 channels
    corrupts the heap in its channels-last backward (width 0.25 would crash).
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return False
    if device.type == "cuda":
        return True
    return all(c.out_channels % 8 == 0 and (c.in_channels % 8 == 0 or c.in_channels <= 3) for c in convs)


def prune_count(masks: Masks, prune: PruneOptions) -> int:
    """How many weights the next level removes: ceil(rate x remaining) for IMP, down to the density for one-shot."""
    if prune.method == "oneshot":
        return masks.count_for_density(prune.density)
    return masks.count_for_rate(prune.rate)


def chance_stop(levels: list[dict[str, Any]], prune: PruneOptions, num_classes: int) -> dict[str, Any] | None:
    """Stop when the last `stop_at_chance` finished levels all sit on the chance plateau.

    A level is at chance when its test error >= 1 - 1/classes - chance_margin. The dense level
    is judged by the same rule, so it counts only when it really is at chance.
    """
    k = prune.stop_at_chance
    if k <= 0 or len(levels) < k:
        return None
    chance = 1.0 - 1.0 / num_classes
    if any(level["test_error"] < chance - prune.chance_margin for level in levels[-k:]):
        return None
    last = int(levels[-1]["level"])
    return {
        "level": last,
        "reason": "chance",
        "detail": f"stopping after level {last}: levels {last - k + 1}..{last} have test error within "
        f"{prune.chance_margin:g} of chance ({chance:.4f}); deeper levels would add nothing",
    }


def layer_stop(masks: Masks, prune: PruneOptions, last: int) -> dict[str, Any] | None:
    """Stop before a pruning that would leave some prunable layer without weights (a collapsed network)."""
    emptied = masks.emptied_by(prune_count(masks, prune))
    if not emptied:
        return None
    layer = masks.name(emptied[0])
    more = f" (and {len(emptied) - 1} more layers)" if len(emptied) > 1 else ""
    return {
        "level": last,
        "reason": "layer_empty",
        "layer": layer,
        "detail": f"stopping after level {last}: pruning level {last + 1} would remove the last weights "
        f"of layer {layer}{more}",
    }


def early_stop(job: Progress, masks: Masks, prune: PruneOptions, num_classes: int) -> dict[str, Any] | None:
    """Before pruning level job.level: whether the trajectory ends at the previous level instead.

    A pure function of what a level-end checkpoint holds (the finished levels' metrics, the
    trained weights and masks), so a resumed job decides exactly as an uninterrupted one.
    """
    return chance_stop(job.levels, prune, num_classes) or layer_stop(masks, prune, job.level - 1)


def start_level(
    model: nn.Module, masks: Masks, job: Progress, prune: PruneOptions, k_rewind: int | None
) -> None:
    """Between levels: prune the trained weights, then rewind the survivors.

    init: to the initial weights; step:K / epoch:K: to the dense run's weights at K; lr: keep the
    trained weights (only the schedule restarts).
    """
    masks.prune(prune_count(masks, prune))
    if prune.rewind == "init":
        load_weights(model, job.init, masks)
    elif k_rewind is not None:
        load_weights(model, job.rewind, masks)
    masks.apply()


def run_imp(
    config: dict,
    device: str,
    ckpt_dir: Path,
    emit: Callable[[list[dict]], None],
    stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda s: None,
    fence: Callable[[], None] = lambda: None,
) -> list[dict]:
    """Train one IMP trajectory (or one-shot job), resuming from `ckpt_dir`; returns every level's metrics.

    `fence` is called right before every checkpoint write; it raises (run_job: the job's lease was
    taken over) to abandon the job without writing. A resumed job trains with the torch thread count
    it started with (CPU reductions split work by thread, so another count changes the last digits);
    the caller's count is restored when it returns.
    """
    threads = torch.get_num_threads()
    dev = torch.device(device)
    try:
        # The job seeds torch's global generators (see _train); the caller gets its own state back.
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return _train(config, device, ckpt_dir, emit, stop, log, fence)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: dict,
    device: str,
    ckpt_dir: Path,
    emit: Callable[[list[dict]], None],
    stop: Callable[[], bool],
    log: Callable[[str], None],
    fence: Callable[[], None],
) -> list[dict]:
    return train_alone(Trajectory(config, device, ckpt_dir, emit, log, fence), stop)


def train_alone(run: Trajectory, stop: Callable[[], bool] = lambda: False) -> Levels:
    """Every remaining level of one trajectory, with its own optimizer steps."""
    while run.next_level():
        train_steps(
            run.forward,
            run.optimizer,
            run.data,
            run.masks,
            run.opts.train,
            run.budget,
            seed=run.opts.seed,
            level=run.job.level,
            start=run.job.step,
            after_step=partial(_after_step, run, stop),
            amp=run.amp,
            step_fn=run.step_fn,
        )
        run.finish_level()
    return run.result()


def _after_step(run: Trajectory, stop: Callable[[], bool], step: int, loss: torch.Tensor) -> None:
    run.stepped(step, loss)
    if stop():
        run.interrupt()


class Trajectory:
    """One job's IMP trajectory, level by level, resumed from its checkpoint directory.

    `run_imp` drives one alone; a pack (train/packed.py) drives several in lockstep and does only
    the optimizer steps itself. Everything else a level does (prune, rewind, evaluate, record,
    checkpoint, emit) happens here, so a packed job's checkpoints and rows are those of a lone one.
    """

    def __init__(
        self,
        config: dict,
        device: str,
        ckpt_dir: Path,
        emit: Callable[[list[dict]], None],
        log: Callable[[str], None] = lambda s: None,
        fence: Callable[[], None] = lambda: None,
    ) -> None:
        self.ckpt_dir, self.emit, self.log, self.fence = ckpt_dir, emit, log, fence
        self.opts = opts = schema.parse_config(config)  # not checked again: the plan did (grid.expand)
        user = targets.find(config)  # the user's own model, data and training step, where named
        self.dev = dev = torch.device(device)
        train_opts, prune = opts.train, opts.prune
        self.data = load_dataset(opts.data, dev, user.get("data"))
        self.model = model = build(opts, self.data, dev, user.get("model"))
        self.step_fn = make_step(user.get("train.step"))
        self.forward = torch.compile(model) if train_opts.compile else model
        self.masks = Masks.of(model)
        log(describe(self.masks, model))
        self.budget = Budget.of(train_opts, self.data.steps_per_epoch(train_opts.batch_size))
        self.final_level = schema.last_level(prune)
        self.k_rewind = rewind_step(prune, self.budget)
        self.amp = autocast(dev, train_opts.amp)
        # A user's model is identified by its whole section (its keys are its constructor's).
        model_identity = dict(config["model"]) if "model" in user else asdict(opts.model)
        self.identity = {"model": model_identity, "prune": asdict(prune), "seed": opts.seed}
        self.optimizer: Optimizer | None = None
        self.clock = time.perf_counter()  # when this run of the current level began

        # -- resume or start fresh ------------------------------------------------------------------
        self.job = job = Progress()
        saved = checkpoint.load(ckpt_dir, log)
        if saved is None:
            job.init = snapshot(model)
            # Ours draw from explicit generators; this one is for a user's model and step (dropout,
            # noise): seeded by the job, saved in every checkpoint, so a resume replays it too.
            torch.manual_seed(derive_seed(opts.seed, "global"))
        else:
            check_identity(ckpt_dir, saved["identity"], self.identity)
            self.job = job = Progress(
                saved["levels"],
                saved["level"],
                saved["step"],
                saved["wall_s"],
                saved["init"],
                saved["rewind"],
                saved.get("stopped"),  # absent from checkpoints written before early stops existed
            )
            started_with = saved.get("threads")  # absent from checkpoints written before it was recorded
            if started_with and started_with != torch.get_num_threads():
                log(
                    f"training with {started_with} torch threads, as the job started (this worker has {torch.get_num_threads()})"
                )
                torch.set_num_threads(started_with)
            model.load_state_dict(saved["model"])
            torch.set_rng_state(saved["rng"])
            if dev.type == "cuda" and saved.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(saved["rng_cuda"], dev)
            log(f"resumed at level {job.level}, step {job.step}; {len(job.levels)} levels done")
            if job.stopped is not None:
                log(f"the trajectory had ended early: {job.stopped['detail']}")
            if job.levels:
                emit(list(job.levels))
        self.optimizer_state = saved["optimizer"] if saved is not None else None

    def save(self, optimizer: Optimizer | None) -> None:
        self.fence()
        job = self.job
        checkpoint.save(
            self.ckpt_dir,
            {
                "identity": self.identity,
                "levels": job.levels,
                "level": job.level,
                "step": job.step,
                "wall_s": job.wall_s + (time.perf_counter() - self.clock),
                "init": job.init,
                "rewind": job.rewind,
                "stopped": job.stopped,
                "model": self.model.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "rng": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.dev) if self.dev.type == "cuda" else None,
                "threads": torch.get_num_threads(),
            },
        )

    def next_level(self) -> bool:
        """Start (or resume) the next level: prune and rewind when it is new, a fresh optimizer.

        False when the trajectory has ended: all its levels done, or an early stop decided here.
        """
        job, masks, prune = self.job, self.masks, self.opts.prune
        if job.level > self.final_level or job.stopped is not None:
            return False
        level, self.clock = job.level, time.perf_counter()
        if job.step is None and level > 0:
            job.stopped = early_stop(job, masks, prune, self.data.num_classes)
            if job.stopped is not None:
                self.log(job.stopped["detail"])
                self.save(None)  # so a resume ends here too, without deciding again
                return False
        if job.step is None:
            if level > 0:
                start_level(self.model, masks, job, prune, self.k_rewind)
            elif self.k_rewind == 0:
                job.rewind = job.init
            job.step, self.optimizer_state = self.start, None
        self.optimizer = make_optimizer(self.model.parameters(), self.opts.train)  # fresh at every level
        if self.optimizer_state is not None:
            self.optimizer.load_state_dict(self.optimizer_state)
            self.optimizer_state = None
        self.log(
            f"level {level}/{self.final_level}: density {masks.density():.4f}, "
            f"steps {job.step}..{self.budget.total_steps} ({self.budget.steps_per_epoch} per epoch)"
        )
        return True

    @property
    def start(self) -> int:
        """Where this level's schedule starts: step K when rewinding to step K, else 0."""
        return self.k_rewind if (self.job.level > 0 and self.k_rewind is not None) else 0

    def _rewinds_at(self, step: int) -> bool:
        return self.job.level == 0 and step == self.k_rewind

    def _checkpoint_due(self, step: int) -> bool:
        every = self.opts.train.checkpoint_every
        epoch, within = divmod(step, self.budget.steps_per_epoch)
        return within == 0 and every > 0 and epoch % every == 0 and step < self.budget.total_steps

    def needs_model(self, step: int) -> bool:
        """Whether `stepped(step)` reads the weights (a rewind snapshot or a checkpoint): a pack
        writes them back into this job's model first."""
        return self._rewinds_at(step) or self._checkpoint_due(step)

    def stepped(self, step: int, loss: torch.Tensor) -> None:
        """After optimizer step `step` of this level: the rewind snapshot, the log line, a periodic checkpoint."""
        self.job.step = step
        if self._rewinds_at(step):
            self.job.rewind = snapshot(self.model)
        epoch, within = divmod(step, self.budget.steps_per_epoch)
        every = self.opts.train.log_every
        if (every and step % every == 0) or (not every and within == 0):
            self.log(f"level {self.job.level} epoch {epoch} step {step}: loss {loss.item():.4f}")
        if self._checkpoint_due(step):
            self.save(self.optimizer)

    def interrupt(self) -> None:
        """Checkpoint mid-level and raise Interrupted (stop() said so)."""
        self.save(self.optimizer)
        raise Interrupted(f"stopped at level {self.job.level}, step {self.job.step}; checkpoint saved")

    def finish_level(self) -> None:
        """Evaluate the trained level, record its metrics, checkpoint, emit the rows."""
        job, masks, data, train_opts = self.job, self.masks, self.data, self.opts.train
        masks.check()
        test_error, test_loss = evaluate(
            self.forward, data.eval_batches("test", train_opts.eval_batch_size), self.amp, self.step_fn
        )
        train_error, train_loss = evaluate(
            self.forward, data.eval_batches("train", train_opts.eval_batch_size), self.amp, self.step_fn
        )
        steps = self.budget.total_steps - self.start
        level = job.level
        metrics = {
            "level": level,
            "density": masks.density(),
            "n_train": data.n_train,
            **param_counts(self.model, masks),
            "test_error": test_error,
            "test_loss": test_loss,
            "train_error": train_error,
            "train_loss": train_loss,
            "epochs": steps / self.budget.steps_per_epoch,
            "steps": steps,
            "budget_unit": self.budget.unit,
            "wall_s": job.wall_s + (time.perf_counter() - self.clock),
            "device": str(self.dev),
        }
        self.log(
            f"level {level} done: density {metrics['density']:.4f} test_error {test_error:.4f} "
            f"train_error {train_error:.4f} ({metrics['wall_s']:.1f} s)"
        )
        job.levels.append(metrics)
        job.level, job.step, job.wall_s = level + 1, None, 0.0
        # The level's trained weights go into this checkpoint: the next level prunes them.
        self.clock = time.perf_counter()
        self.save(None)
        self.emit(list(job.levels))

    def result(self) -> Levels:
        return Levels(self.job.levels, self.job.stopped)


# A trajectory's length is not part of what a checkpoint must match: a deeper job of the same
# trajectory continues from the shallower one's last level (a sweep grown with prune.levels).
LENGTH = ("levels", "density")


def check_identity(ckpt_dir: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint of another job; options it predates count as at their defaults."""
    for key, value in current.items():
        theirs = saved.get(key)
        if isinstance(theirs, dict) and targets.TARGET not in theirs:  # an option section (model, prune)
            theirs = {**asdict(schema.SECTION_TYPES[key]()), **theirs}
        if (
            key == "prune"
            and isinstance(theirs, dict)
            and theirs.get("method") == "imp" == value.get("method")
        ):
            theirs, value = ({k: v for k, v in d.items() if k not in LENGTH} for d in (theirs, value))
        if theirs != value:
            raise ValueError(f"{ckpt_dir} holds a checkpoint of another job ({key}: {theirs} != {value})")
