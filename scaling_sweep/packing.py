"""Which jobs train together in one process (`launcher.pack`): the packable ones, grouped by architecture and recipe, cut into packs.

Torch-free: the launcher forms packs; scaling_sweep.train.packed trains them. Packing is an
execution setting: it changes neither a job's id nor what it computes (up to floating-point
reordering), so a sweep may be run, resumed or extended with any packing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scaling_sweep.errors import ConfigError
from scaling_sweep.spec import JobSpec

# Built-in models with a stacked program in train/packed.py.
PACKABLE_MODELS = ("cnn1d", "mlp")
# Jobs per pack under `auto`. On a 2-core CPU the time per model and step falls until about 9
# jobs of the default sweep's 1-D CNN share a step (0.36 ms at width 0.25, against 1.6 ms alone),
# then stays flat: the stacked activations no longer fit in the core's cache.
AUTO_SIZE = 9
# What a pack may vary: everything else (model, recipe, pruning) is one program and one schedule.
PER_JOB = (("seed",), ("data", "fraction"), ("data", "data_seed"))


def pack_size(value: Any) -> int:
    """launcher.pack as the most jobs per pack: auto -> AUTO_SIZE, off -> 1, N -> N."""
    if value == "auto":
        return AUTO_SIZE
    if value == "off" or value is False:  # (YAML reads a bare `off` as false)
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"launcher.pack={value!r}: auto (pack the jobs that share a model and recipe), off, "
            "or the most jobs per pack (an integer >= 1)"
        )
    return value


def unpackable(spec: JobSpec) -> str:
    """Why `spec` trains alone ("" when it can be packed)."""
    model, train = spec.model, spec.train
    if spec.code or any("_target_" in section for section in (model, spec.data, train.get("step") or {})):
        return "user components train alone"
    if model.get("name") not in PACKABLE_MODELS:
        return f"model {model.get('name')} has no stacked program (packable: {', '.join(PACKABLE_MODELS)})"
    if train.get("optimizer", "sgd") != "sgd":
        return f"train.optimizer={train.get('optimizer')}: packs train with SGD"
    if train.get("compile"):
        return "train.compile=true trains alone"
    return ""


def pack_key(spec: JobSpec) -> str:
    """What jobs of one pack share: the trainer config without the per-job keys."""
    config = json.loads(json.dumps(spec.trainer_config(), sort_keys=True, default=str))
    for path in PER_JOB:
        node = config
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return json.dumps(config, sort_keys=True)


def form_packs(
    specs: Sequence[JobSpec],
    size: int,
    workers: int = 1,
    cost: Mapping[str, float] | None = None,
    costliest_first: bool = False,
) -> list[list[JobSpec]]:
    """Cut `specs` into packs of at most `size` jobs, launched in the order of their first job in `specs`.

    Jobs that share `pack_key` are taken in job-id order and split into near-equal packs; then the
    costliest pack (`cost`: expected seconds per job id, plan's estimate; else one per job) is
    halved while there are fewer packs than workers. With
    `costliest_first`, packs start costliest first (the order that ends a sweep of few long units
    soonest). Which jobs share a pack does not change their numbers (train/packed.py).
    """
    if size <= 1:
        return [[s] for s in specs]
    alone = [[s] for s in specs if unpackable(s)]
    taken = {p[0].job_id for p in alone}
    groups: dict[str, list[JobSpec]] = {}
    for s in sorted(specs, key=lambda s: s.job_id):
        if s.job_id not in taken:
            groups.setdefault(pack_key(s), []).append(s)
    free = [part for jobs in groups.values() for part in _split(jobs, math.ceil(len(jobs) / size))]

    def weight(pack: Sequence[JobSpec]) -> float:
        return sum((cost or {}).get(s.job_id, 1.0) for s in pack)

    # A smaller pack runs less efficiently (the default sweep's width 0.5: 9 jobs packed in 20 s,
    # the same 9 as packs of 5 and 4 in 36 s of worker time): split only to keep every worker busy.
    while len(free) + len(alone) < workers:
        i = max(range(len(free)), key=lambda i: (weight(free[i]), free[i][0].job_id))
        if len(free[i]) < 2:
            break
        free[i : i + 1] = _split(free[i], 2)
    position = {s.job_id: k for k, s in enumerate(specs)}
    packs = sorted(free + alone, key=lambda p: min(position[s.job_id] for s in p))
    if costliest_first and any(len(p) > 1 for p in packs):
        packs.sort(key=weight, reverse=True)  # stable: ties keep the order above
    return packs


def _split(jobs: list[JobSpec], n: int) -> list[list[JobSpec]]:
    """`jobs` in n near-equal consecutive parts."""
    q, r = divmod(len(jobs), n)
    parts, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        parts.append(jobs[start:end])
        start = end
    return parts


def describe(packs: Sequence[Sequence[JobSpec]]) -> str:
    """'27 jobs in 3 packs of 9' / '... and 2 alone'."""
    together = [p for p in packs if len(p) > 1]
    alone = sum(1 for p in packs if len(p) == 1)
    if not together:
        return f"{alone} jobs, one per worker (unpacked)"
    sizes = sorted({len(p) for p in together})
    size = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    jobs = sum(len(p) for p in together)
    packs = f"{len(together)} pack{'s' if len(together) > 1 else ''}"
    return f"{jobs} jobs in {packs} of {size}" + (f", {alone} alone" if alone else "")
