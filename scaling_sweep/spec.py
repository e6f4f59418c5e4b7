"""`JobSpec`: one training trajectory, its canonical JSON and its stable `job_id`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from scaling_sweep.schema import ADDED_OPTIONS, EXECUTION_KEYS, SECTIONS


def _canonical_section(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    # Execution settings travel with the spec (the trainer needs them) but are left out, so the same
    # training on another machine, or with data at another path, is the same job; so are options
    # added after ids were first frozen while at their default, so old ids hold (schema metadata).
    skip = EXECUTION_KEYS[name]
    added = ADDED_OPTIONS[name]
    return {k: v for k, v in values.items() if k not in skip and not (k in added and v == added[k])}


def section_json(name: str, values: Mapping[str, Any]) -> str:
    """Canonical JSON of one section (execution keys and default-valued added options left out)."""
    return json.dumps(_canonical_section(name, values), sort_keys=True, separators=(",", ":"))


def join_canonical(parts: Mapping[str, str], seed: int, code: Mapping[str, str] | None = None) -> str:
    """The canonical JSON of a whole spec from its sections' canonical JSON.

    Same text as json.dumps(identity, sort_keys=True, separators=(",", ":")): keys in sorted
    order (code,) data, model, prune, seed, train. Lets the grid reuse section JSON shared by many jobs.
    `code` (the source hashes of user components) enters only when there is some, so the ids of
    jobs made of built-ins never change.
    """
    head = f'"code":{json.dumps(dict(code), sort_keys=True, separators=(",", ":"))},' if code else ""
    return (
        f'{{{head}"data":{parts["data"]},"model":{parts["model"]},"prune":{parts["prune"]},'
        f'"seed":{int(seed)},"train":{parts["train"]}}}'
    )


def _hash_id(canonical_json: str) -> str:
    return hashlib.sha256(canonical_json.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JobSpec:
    """One training trajectory: everything that changes its numbers (plus where its data lives)."""

    model: Mapping[str, Any]
    data: Mapping[str, Any]
    train: Mapping[str, Any]
    prune: Mapping[str, Any]
    seed: int
    # Grid axes this job stands for, e.g. {"model.width": 2, "prune.density": [1, 0.8, ...]};
    # for display only, not part of the identity.
    axes: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # {"model": sha256 of its module's source, ...} for each user component (`_target_`): an
    # edited model is another job. Empty for built-ins.
    code: Mapping[str, str] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The training-relevant config as plain data: what `job_id` hashes."""
        out: dict[str, Any] = {s: _canonical_section(s, getattr(self, s)) for s in SECTIONS}
        out["seed"] = int(self.seed)
        if self.code:
            out["code"] = dict(self.code)
        return out

    @cached_property
    def canonical_json(self) -> str:
        return join_canonical({s: section_json(s, getattr(self, s)) for s in SECTIONS}, self.seed, self.code)

    def preset_canonical(self, canonical_json: str) -> JobSpec:
        """Seed the cached canonical JSON (computed from shared section pieces by the grid) and id."""
        self.__dict__["canonical_json"] = canonical_json
        self.__dict__["job_id"] = _hash_id(canonical_json)
        return self

    @cached_property
    def job_id(self) -> str:
        return _hash_id(self.canonical_json)

    def to_dict(self) -> dict[str, Any]:
        """Everything, execution settings included, as JSON-ready data (`spec.json`)."""
        code = {"code": dict(self.code)} if self.code else {}
        return {**self.trainer_config(), **code, "axes": dict(self.axes), "job_id": self.job_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobSpec:
        spec = cls(
            model=dict(d["model"]),
            data=dict(d["data"]),
            train=dict(d["train"]),
            prune=dict(d["prune"]),
            seed=int(d["seed"]),
            axes=dict(d.get("axes", {})),
            code=dict(d.get("code", {})),
        )
        if "job_id" in d and d["job_id"] != spec.job_id:
            raise ValueError(f"spec.json says job_id={d['job_id']} but its content hashes to {spec.job_id}")
        return spec

    def trainer_config(self) -> dict[str, Any]:
        """The plain dict the trainer takes (it knows nothing of JobSpec)."""
        return {
            "model": dict(self.model),
            "data": dict(self.data),
            "train": dict(self.train),
            "prune": dict(self.prune),
            "seed": int(self.seed),
        }


def dotted(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {"train.lr": 0.1, ...}: how configs are compared and shown key by key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(dotted(v, key) if isinstance(v, Mapping) else {key: v})
    return out
