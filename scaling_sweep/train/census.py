"""A job's model before it trains: parameters and forward FLOPs counted on the meta device (no memory, no
data), and seconds per step timed on a random batch of the real shape (what `plan` estimates from)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from scaling_sweep import schema, targets
from scaling_sweep.train.models import build_model
from scaling_sweep.train.pruning import Masks, attach_masks

# Input shape and classes of the built-in datasets whose shape is fixed (a test pins them against
# the loaders); user datasets and ImageNet folders are known only once loaded.
SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist1d": ((1, 40), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}


@dataclass(frozen=True)
class Census:
    """What a job's model is, counted without building it for real."""

    params_total: int  # every parameter
    params_trainable: int  # those with requires_grad (what `params` means in grid filters)
    params_prunable: int  # what IMP prunes (prune.include_output_layer / include / exclude)
    prunable_tensors: int  # how many weight tensors those are
    flops_per_example: int | None  # forward FLOPs of one example (None: not asked for)


def input_spec(data: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of a data section, or None where they are known only once the data is loaded."""
    if schema.TARGET in data or data.get("name") not in SHAPES:
        return None
    return SHAPES[data["name"]]


def census(config: Mapping[str, Any], flops: bool = False) -> Census | None:
    """Count a trainer config's model on the meta device; None where the data's shape is unknown.

    `flops`: also run one example through it under FlopCounterMode (matmuls and convolutions, a
    multiply-add counted as 2). Meta kernels of convolutions are Python code that torch imports on
    first use (about 1.5 s on a 2-core CPU), so only callers that show or filter by FLOPs ask.
    """
    spec = input_spec(config["data"])
    if spec is None:
        return None
    shape, classes = spec
    prune = schema.parse("prune", config["prune"])
    with torch.device("meta"):
        found = targets.find(config).get("model")
        if found is not None:
            model = targets.resolve(found)(**found.kwargs, input_shape=shape, num_classes=classes)
        else:
            model = build_model(schema.parse("model", config["model"]), shape, classes)
        attach_masks(model, prune.include_output_layer, prune.include, prune.exclude)
    masks = Masks.of(model)
    params = list(model.parameters())
    return Census(
        params_total=sum(p.numel() for p in params),
        params_trainable=sum(p.numel() for p in params if p.requires_grad),
        params_prunable=masks.numel(),
        prunable_tensors=len(masks.weights),
        flops_per_example=forward_flops(model, shape) if flops else None,
    )


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one example of `input_shape` through a meta-device model (eval mode: no batch statistics)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, *input_shape, device="meta"))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def parameter_counts(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(all parameters, prunable ones) of a trainer config's model, or None where the data's shape is unknown."""
    counted = census(config)
    return None if counted is None else (counted.params_total, counted.params_prunable)


# Timing: steps timed per model after warm-up, and the seconds one model may take.
WARMUP_STEPS = 3
TIMED_STEPS = 20
SECONDS_PER_MODEL = 0.6


@dataclass(frozen=True)
class Timing:
    """Seconds of one model here: a training step at the job's batch size, one example evaluated, one checkpoint write."""

    step_s: float
    eval_s: float
    save_s: float


def time_model(
    config: Mapping[str, Any], n_train: int, n_test: int, threads: int, device: str
) -> Timing | None:
    """Time a trainer config's model as the trainer runs it, on `device` with `threads` CPU threads;
    None where the data's shape is unknown without loading it.

    A training step (the loop's: learning rate, forward, backward, optimizer, masks) on a fixed random
    batch of the real shape, after a warm-up; an evaluation batch; a checkpoint write. At most about
    SECONDS_PER_MODEL seconds, fewer timed steps for a slow model.
    """
    from scaling_sweep.train import checkpoint
    from scaling_sweep.train.imp import channels_last_pays, snapshot
    from scaling_sweep.train.loop import autocast, optimizer_step
    from scaling_sweep.train.models import build_user_model
    from scaling_sweep.train.schedule import Budget, lr_at, make_optimizer
    from scaling_sweep.train.steps import make_step

    spec = input_spec(config["data"])
    if spec is None:
        return None
    shape, classes = spec
    opts, user = schema.parse_config(config), targets.find(config)
    dev = torch.device(device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if "model" in user:
                model = build_user_model(user["model"], shape, classes)
            else:
                model = build_model(opts.model, shape, classes)
            attach_masks(model, opts.prune.include_output_layer, opts.prune.include, opts.prune.exclude)
            model.to(dev)
            channels_last = opts.train.channels_last and channels_last_pays(model, dev)
            if channels_last:
                model.to(memory_format=torch.channels_last)
            masks, step_fn = Masks.of(model), make_step(user.get("train.step"))
            optimizer = make_optimizer(model.parameters(), opts.train)
            amp = autocast(dev, opts.train.amp)
            batch = min(opts.train.batch_size, n_train)
            # A fixed random batch of the real shape, drawn by index as the loop draws its batches.
            pool = torch.randn(2 * batch, *shape, device=dev)
            labels = torch.randint(classes, (2 * batch,), device=dev)
            idx = torch.randperm(2 * batch, device=dev)[:batch]
            budget, steps = Budget.of(opts.train, schema.steps_per_epoch(n_train, opts.train.batch_size)), [0]

            def prepared(x: torch.Tensor) -> torch.Tensor:
                return (
                    x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
                )

            def train_step() -> None:
                x, y = prepared(pool.index_select(0, idx)), labels.index_select(0, idx)
                lr = lr_at(steps[0] % budget.total_steps, opts.train, budget)
                steps[0] += 1
                optimizer_step(model, optimizer, masks, step_fn, x, y, lr, amp)

            sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
            # One CPU thread: count this process's CPU time, not the wall clock, so that other work on
            # a shared machine does not inflate the estimate (a job that has its core takes that long).
            clock = time.process_time if dev.type == "cpu" and threads == 1 else time.perf_counter
            step_s = _seconds_per_call(train_step, sync, clock, WARMUP_STEPS, TIMED_STEPS, SECONDS_PER_MODEL)
            evaluated = min(opts.train.eval_batch_size, n_train + n_test, 256)
            x_eval = prepared(torch.randn(evaluated, *shape, device=dev))
            y_eval = torch.randint(classes, (evaluated,), device=dev)
            model.eval()

            def eval_batch() -> None:
                with torch.inference_mode(), amp():
                    step_fn.measure(model, x_eval, y_eval)

            eval_s = _seconds_per_call(eval_batch, sync, clock, 1, 3, SECONDS_PER_MODEL / 3) / evaluated
            state = {"model": model.state_dict(), "init": snapshot(model), "rng": torch.get_rng_state()}
            with tempfile.TemporaryDirectory(prefix="scaling-sweep-timing-") as tmp:
                checkpoint.save(tmp, state)  # the first write also creates the directory's files
                saves = []
                for _ in range(3):  # the median of three: one fsync can take ten times another
                    t0 = time.perf_counter()
                    checkpoint.save(tmp, state)
                    saves.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads_before)
    return Timing(step_s=step_s, eval_s=eval_s, save_s=sorted(saves)[1])


def _seconds_per_call(
    fn: Callable[[], None],
    sync: Callable[[], None],
    clock: Callable[[], float],
    warmup: int,
    reps: int,
    limit: float,
) -> float:
    """Mean `clock` seconds of `fn` after `warmup` calls: `reps` calls, fewer (at least 2) once `limit`
    wall seconds are spent."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - t0 > limit / 2:
            break
    sync()
    t0, c0, done = time.perf_counter(), clock(), 0
    while done < reps and (done < 2 or time.perf_counter() - t0 < limit):
        fn()
        done += 1
    sync()
    return (clock() - c0) / done
