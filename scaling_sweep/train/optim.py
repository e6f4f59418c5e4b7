"""SGD (momentum, Nesterov) and AdamW as a few fused foreach calls, numerically torch.optim's foreach path.

Why not torch.optim: its first step imports torch._dynamo (1.2-3 s per process on a 2-core CPU,
as much as a whole MNIST-1D level), and its per-step bookkeeping is a visible share of a
sub-millisecond step. A test pins these against torch.optim.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SGD:
    """SGD with L2 weight decay, momentum (dampening 0) and optional Nesterov, as torch.optim.SGD."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        self.params = list(params)
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay
        self.buffers: list[torch.Tensor] | None = None  # momentum, created on the first step

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone().detach() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            if self.nesterov:
                grads = torch._foreach_add(grads, self.buffers, alpha=self.momentum)
            else:
                grads = self.buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": self.buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bufs = state["buffers"]
        self.buffers = None if bufs is None else [b.to(p.device) for b, p in zip(bufs, self.params)]


class AdamW:
    """Adam with decoupled weight decay (betas 0.9, 0.999, eps 1e-8), as torch.optim.AdamW."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # (Every parameter gets a gradient in these models, so one step counter serves all.)
        beta1, beta2 = self.betas
        self.steps += 1
        grads = [p.grad for p in self.params]
        if self.weight_decay:
            torch._foreach_mul_(self.params, 1 - self.lr * self.weight_decay)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - beta2)
        step_size = self.lr / (1 - beta1**self.steps)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, (1 - beta2**self.steps) ** 0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for mine, saved in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for t, s in zip(mine, saved):
                t.copy_(s)
