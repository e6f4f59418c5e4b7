"""Packed execution: jobs of one architecture and recipe train together as one stacked program.

K models of one architecture become one: their weights are stacked along a leading job axis, a
convolution becomes a grouped convolution with K groups (channels-last, where oneDNN is fast for
few channels per group), a linear layer a batched matmul, BatchNorm one layer over K x C channels
(per channel, so per job, exactly). Each job keeps its own data order, learning rate, masks,
momentum, early stops, checkpoints and rows: `Trajectory` does everything but the optimizer
step, as it does for a job alone, and a pack writes a job's slice back into its model whenever
the job reads it (rewind snapshot, checkpoint, evaluation, pruning).

A job's numbers are those it gets alone up to floating-point reordering inside the grouped
kernels, and do not depend on its pack-mates: not on how many there are, which, in which slot,
or where they stand in their schedules (tested on CPU). So a pack killed and resumed, its jobs
realigned at their own last checkpoints, gives bit-identical numbers, like a job alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_sweep.train.imp import Interrupted, Levels, Trajectory, train_alone
from scaling_sweep.train.loop import level_batches
from scaling_sweep.train.optim import SGD
from scaling_sweep.train.schedule import lr_at


class NotStackable(Exception):
    """The models cannot be one stacked program (a layer type or setting the program lacks)."""


# -- the stacked program -------------------------------------------------------------------------


@dataclass
class Op:
    kind: str  # conv | bn | relu | flatten | linear
    module: nn.Module
    prefix: str  # the module's name in the model ("body.0"), for its parameters' keys


def program(model: nn.Module) -> list[Op]:
    """The model as a list of stackable layers, in the order its forward runs them.

    The built-in models that pack (cnn1d, mlp) are `head(body(x))` with `body` a Sequential of
    these layers; anything else is refused rather than guessed at.
    """
    body, head = getattr(model, "body", None), getattr(model, "head", None)
    if not isinstance(body, nn.Sequential) or not isinstance(head, nn.Linear):
        raise NotStackable(f"{type(model).__name__} is not body (Sequential) + head (Linear)")
    ops = [_op(m, f"body.{name}") for name, m in body.named_children()] + [_op(head, "head")]
    if ops[0].kind not in ("conv", "flatten"):
        raise NotStackable(f"the first layer is {ops[0].kind}; a packed model starts with Conv1d or Flatten")
    return ops


def _op(m: nn.Module, prefix: str) -> Op:
    if isinstance(m, nn.Conv1d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise NotStackable(f"{prefix}: Conv1d with padding {m.padding!r} ({m.padding_mode})")
        return Op("conv", m, prefix)
    if isinstance(m, nn.BatchNorm1d):
        if not (m.affine and m.track_running_stats and m.momentum is not None):
            raise NotStackable(
                f"{prefix}: BatchNorm1d without affine weights, running statistics or momentum"
            )
        return Op("bn", m, prefix)
    if isinstance(m, nn.ReLU):
        return Op("relu", m, prefix)
    if isinstance(m, nn.Flatten):
        return Op("flatten", m, prefix)
    if isinstance(m, nn.Linear):
        return Op("linear", m, prefix)
    raise NotStackable(f"{prefix}: {type(m).__name__} has no stacked form")


class Stack:
    """The weights, buffers, masks and momentum of K same-shaped models, stacked along dim 0."""

    def __init__(self, models: Sequence[nn.Module], momentum: float, nesterov: bool, weight_decay: float):
        first = models[0]
        self.ops = program(first)
        self.param_keys = [k for k, _ in first.named_parameters()]
        self.buffer_keys = [k for k, _ in first.named_buffers()]
        shapes = {k: v.shape for k, v in first.state_dict().items()}
        for m in models[1:]:
            if {k: v.shape for k, v in m.state_dict().items()} != shapes:
                raise NotStackable("the jobs' models differ in their tensors' shapes")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        with torch.no_grad():
            self.params = {
                k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]).requires_grad_()
                for k in self.param_keys
            }
            self.buffers = {
                k: torch.stack([dict(m.named_buffers())[k] for m in models]) for k in self.buffer_keys
            }
        self.momenta = {k: torch.zeros_like(p) for k, p in self.params.items()} if momentum else {}
        # (weight, mask) pairs, as Masks pairs them: a parameter and its `<name>_mask` buffer.
        self.masked = [k for k in self.param_keys if k + "_mask" in self.buffers]

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    # -- moving one job in and out ---------------------------------------------------------------

    @torch.no_grad()
    def read_in(self, i: int, model: nn.Module, optimizer: SGD | None) -> None:
        """Job i's weights, buffers (masks included) and momentum (zero when it has none yet) into the stack."""
        for k, p in model.named_parameters():
            self.params[k][i].copy_(p)
        for k, b in model.named_buffers():
            self.buffers[k][i].copy_(b)
        saved = optimizer.buffers if optimizer is not None else None
        for j, k in enumerate(self.param_keys):
            if k not in self.momenta:
                continue
            if saved is None:
                self.momenta[k][i].zero_()
            else:
                self.momenta[k][i].copy_(saved[j])

    @torch.no_grad()
    def write_back(self, i: int, model: nn.Module, optimizer: SGD | None, stepped: bool) -> None:
        """Job i's slice into its own model (and its momentum into its optimizer, once it has stepped)."""
        for k, p in model.named_parameters():
            p.copy_(self.params[k][i])
        for k, b in model.named_buffers():
            b.copy_(self.buffers[k][i])
        if optimizer is not None and self.momenta and stepped:
            optimizer.buffers = [self.momenta[k][i].clone() for k in self.param_keys]

    @torch.no_grad()
    def keep(self, rows: Sequence[int]) -> None:
        """Drop every job but `rows` (a job that finished leaves the stack)."""
        idx = torch.tensor(list(rows), dtype=torch.long, device=next(iter(self.params.values())).device)
        self.params = {k: p.detach().index_select(0, idx).requires_grad_() for k, p in self.params.items()}
        self.buffers = {k: b.index_select(0, idx) for k, b in self.buffers.items()}
        self.momenta = {k: m.index_select(0, idx) for k, m in self.momenta.items()}

    # -- one step of some of the jobs -------------------------------------------------------------

    def step(
        self,
        rows: Sequence[int],
        x: torch.Tensor,
        y: torch.Tensor,
        lrs: Sequence[float],
        amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> torch.Tensor:
        """One optimizer step of jobs `rows` on their batches x [S, B, ...], y [S, B]; their losses [S].

        All jobs at once work in place on the stack; a subset (a short last batch of an epoch, which
        only some jobs have) is gathered, stepped and scattered back.
        """
        if len(rows) == len(self) > 1:
            return self._step(self.params, self.buffers, self.momenta, x, y, lrs, amp)
        # One job alone would run plain (ungrouped) kernels, which sum in another order: it steps
        # beside a copy of itself instead, so that its numbers never depend on how many train.
        alone = len(rows) == 1
        rows, x, y, lrs = (
            (rows * 2, x.expand(2, *x.shape[1:]), y.expand(2, *y.shape[1:]), lrs * 2)
            if alone
            else (rows, x, y, lrs)
        )
        idx = torch.tensor(list(rows), dtype=torch.long, device=x.device)
        with torch.no_grad():
            params = {k: p.detach().index_select(0, idx).requires_grad_() for k, p in self.params.items()}
            buffers = {k: b.index_select(0, idx) for k, b in self.buffers.items()}
            momenta = {k: m.index_select(0, idx) for k, m in self.momenta.items()}
        losses = self._step(params, buffers, momenta, x, y, lrs, amp)
        keep = slice(0, 1) if alone else slice(None)
        with torch.no_grad():
            for mine, theirs in ((self.params, params), (self.buffers, buffers), (self.momenta, momenta)):
                for k, t in theirs.items():
                    mine[k].index_copy_(0, idx[keep], t.detach()[keep])
        return losses[keep]

    def _step(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        momenta: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        lrs: Sequence[float],
        amp: Callable[[], contextlib.AbstractContextManager],
    ) -> torch.Tensor:
        with amp():
            logits = self.forward(params, buffers, x)
        # Each job's loss is the mean over its own batch, as alone; their sum has each one's gradient.
        # (logsumexp - the target's logit: cross-entropy in 4x less time than log_softmax over 10 classes)
        logits = logits.float()
        losses = (torch.logsumexp(logits, -1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)).mean(1)
        plist = list(params.values())
        for p in plist:
            p.grad = None
        losses.sum().backward()
        self._update(params, buffers, momenta, lrs)
        return losses.detach()

    @torch.no_grad()
    def _update(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        momenta: dict[str, torch.Tensor],
        lrs: Sequence[float],
    ) -> None:
        """train/optim.SGD's update, per job: the same foreach operations on the stacked tensors."""
        plist = list(params.values())
        grads = [p.grad for p in plist]
        if self.weight_decay:
            grads = torch._foreach_add(grads, plist, alpha=self.weight_decay)
        if self.momentum:
            bufs = [momenta[k] for k in params]
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, grads)
            grads = torch._foreach_add(grads, bufs, alpha=self.momentum) if self.nesterov else bufs
        # Every job's update is p + g x (-lr), whatever the others' rates: a job's numbers must not
        # depend on its pack-mates (nor on which of them still train), so that a resumed pack, its
        # jobs realigned, gives the numbers of an uninterrupted one.
        neg = -torch.tensor(lrs, dtype=plist[0].dtype, device=plist[0].device)
        torch._foreach_add_(plist, [g * neg.view(-1, *([1] * (g.dim() - 1))) for g in grads])
        if self.masked:
            torch._foreach_mul_([params[k] for k in self.masked], [buffers[k + "_mask"] for k in self.masked])
        for op in self.ops:  # BatchNorm counts its batches (state_dict keeps the count)
            if op.kind == "bn":
                buffers[f"{op.prefix}.num_batches_tracked"].add_(1)

    def forward(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """Training-mode logits [K, B, classes] of K models on their batches x [K, B, ...]."""
        k, b = x.shape[:2]
        if self.ops[0].kind == "conv":
            # (K, B, C, L) -> (B, K*C, 1, L): the jobs' channels side by side, one grouped conv2d.
            c = x.shape[2]
            h = x.reshape(k, b, c, -1).transpose(0, 1).reshape(b, k * c, 1, -1)
            h = h.contiguous(memory_format=torch.channels_last)
        else:
            h = x
        flat = self.ops[0].kind != "conv"
        for op in self.ops:
            m, w = op.module, params.get(f"{op.prefix}.weight")
            bias = params.get(f"{op.prefix}.bias")
            if op.kind == "conv":
                out, per_group, width = w.shape[1], w.shape[2], w.shape[3]
                h = F.conv2d(
                    h,
                    w.reshape(k * out, per_group, 1, width),
                    None if bias is None else bias.reshape(-1),
                    stride=(1, m.stride[0]),
                    padding=(0, m.padding[0]),
                    dilation=(1, m.dilation[0]),
                    groups=k * m.groups,
                )
            elif op.kind == "bn":
                h = F.batch_norm(
                    h,
                    buffers[f"{op.prefix}.running_mean"].view(-1),
                    buffers[f"{op.prefix}.running_var"].view(-1),
                    w.reshape(-1),
                    bias.reshape(-1),
                    True,
                    m.momentum,
                    m.eps,
                )
            elif op.kind == "relu":
                h = F.relu_(h)  # BatchNorm's backward needs its input, not its output
            elif op.kind == "flatten":
                h = h.reshape(k, b, -1) if flat else _JobsFirst.apply(h, k)
                flat = True
            elif op.kind == "linear":
                wt = w.transpose(1, 2)
                h = torch.bmm(h, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, wt)
        return h


class _JobsFirst(torch.autograd.Function):
    """Channels-last features (B, K*C, 1, L) as each job's flattened rows (K, B, C*L), for the head's
    batched matmul; the gradient goes back channels-last. (Autograd's own reshape would hand it back
    in the copy's layout, and the ReLU backward before it, over mismatched layouts, took 10x longer.)"""

    @staticmethod
    def forward(ctx, h: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        ctx.shape = b, kc, _, length = h.shape
        return h.view(b, k, kc // k, length).permute(1, 0, 2, 3).reshape(k, b, -1)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        b, kc, _, length = ctx.shape
        k = g.shape[0]
        out = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=torch.channels_last)
        out.view(b, k, kc // k, length).copy_(g.reshape(k, b, kc // k, length).permute(1, 0, 2, 3))
        return out, None


# -- the pack driver -----------------------------------------------------------------------------


@dataclass
class Member:
    """One job of a pack: its trainer config and the callbacks `run_imp` takes."""

    config: dict
    ckpt_dir: Path
    emit: Callable[[list[dict]], None]
    log: Callable[[str], None] = lambda s: None
    fence: Callable[[], None] = lambda: None


@dataclass
class _Live:
    """A member while it trains: its trajectory, this level's batches, and whether it stepped yet."""

    index: int  # in the pack's members
    run: Trajectory
    batches: Iterator[tuple[int, torch.Tensor, torch.Tensor]] | None = None
    stepped: bool = False
    pending: tuple[int, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)


def run_pack(
    members: Sequence[Member], device: str, stop: Callable[[], bool] = lambda: False
) -> list[Levels | BaseException]:
    """Train every member's trajectory (resuming each from its checkpoint) as one stacked program.

    Returns, per member, its levels as `run_imp` returns them, or the exception that ended it
    (Interrupted when stop() said so; any other error ends only that member). Members whose models
    cannot be stacked train one after another instead, as `run_imp` would train them.
    """
    threads = torch.get_num_threads()
    dev = torch.device(device)
    keep_freed_memory()
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return _run_pack(members, device, stop)
    finally:
        torch.set_num_threads(threads)


def _run_pack(
    members: Sequence[Member], device: str, stop: Callable[[], bool]
) -> list[Levels | BaseException]:
    results: list[Levels | BaseException | None] = [None] * len(members)
    live: list[_Live] = []
    for i, m in enumerate(members):
        try:
            live.append(_Live(i, Trajectory(m.config, device, m.ckpt_dir, m.emit, m.log, m.fence)))
        except Exception as e:
            results[i] = _failed(m, e)
    if not live:
        return results  # type: ignore[return-value]
    first = live[0].run.opts.train
    try:
        stack = Stack([lv.run.model for lv in live], first.momentum, first.nesterov, first.weight_decay)
    except NotStackable as e:
        for lv in live:
            lv.run.log(f"not packed ({e}): training alone")
        return _one_by_one(live, members, results, stop)
    for lv in live:
        lv.run.log(f"packed: {len(live)} jobs train as one stacked program")

    def leave(lv: _Live, outcome: Levels | BaseException) -> None:
        results[lv.index] = outcome
        stack.keep([r for r, other in enumerate(live) if other is not lv])
        live.remove(lv)

    def advance(lv: _Live) -> bool:
        """Finish the member's level if its batches ran out and start the next; False when it left."""
        while True:
            if lv.batches is not None:
                lv.pending = next(lv.batches, None)
                if lv.pending is not None:
                    return True
            run, row = lv.run, live.index(lv)
            try:
                if lv.batches is not None:
                    stack.write_back(row, run.model, None, False)
                    run.finish_level()
                if not run.next_level():
                    leave(lv, run.result())
                    return False
            except Exception as e:
                leave(lv, _failed(members[lv.index], e))
                return False
            stack.read_in(row, run.model, run.optimizer)  # pruned, rewound, fresh momentum
            opts = run.opts
            lv.batches = level_batches(
                run.data, opts.train, run.budget, seed=opts.seed, level=run.job.level, start=run.job.step
            )
            lv.stepped = getattr(run.optimizer, "buffers", None) is not None

    for lv in list(live):
        advance(lv)
    amp = live[0].run.amp if live else contextlib.nullcontext
    while live:
        # Members whose next batches have the same shape step together (a short last batch of an
        # epoch steps with the members that have one too).
        groups: dict[tuple, list[_Live]] = {}
        for lv in live:
            groups.setdefault(tuple(lv.pending[1].shape), []).append(lv)
        for group in groups.values():
            rows = [live.index(lv) for lv in group]
            x = torch.stack([lv.pending[1] for lv in group])
            y = torch.stack([lv.pending[2] for lv in group])
            lrs = [lr_at(lv.pending[0], lv.run.opts.train, lv.run.budget) for lv in group]
            losses = stack.step(rows, x, y, lrs, amp)
            for lv, loss in zip(group, losses):
                lv.stepped = True
                step = lv.pending[0] + 1
                if lv.run.needs_model(step):  # its row now: a member that failed above has left
                    stack.write_back(live.index(lv), lv.run.model, lv.run.optimizer, True)
                try:
                    lv.run.stepped(step, loss)
                except Exception as e:
                    leave(lv, _failed(members[lv.index], e))
        if stop():
            for row, lv in enumerate(live):
                stack.write_back(row, lv.run.model, lv.run.optimizer, lv.stepped)
                try:
                    lv.run.interrupt()
                except Exception as e:  # Interrupted, or the job's lease was lost
                    results[lv.index] = e
            return results  # type: ignore[return-value]
        for lv in list(live):
            advance(lv)
    return results  # type: ignore[return-value]


def _one_by_one(
    live: list[_Live], members: Sequence[Member], results: list, stop: Callable[[], bool]
) -> list[Levels | BaseException]:
    for lv in live:
        try:
            results[lv.index] = train_alone(lv.run, stop)
        except Interrupted as e:
            results[lv.index] = e
            for rest in live[live.index(lv) + 1 :]:
                results[rest.index] = Interrupted("stopped before it started")
            break
        except Exception as e:
            results[lv.index] = _failed(members[lv.index], e)
    return results


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks of up to 32 MiB in the heap instead of unmapping them.

    A stacked step allocates and frees activations of a few MB each, every step; by default
    glibc hands blocks over 128 KiB back to the kernel and the next step page-faults them in
    again: 15 % of a packed step of the default sweep's width 0.5 on this CPU. Elsewhere a no-op.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _failed(member: Member, e: Exception) -> Exception:
    member.log(f"failed in a pack: {traceback.format_exception_only(type(e), e)[-1].strip()}")
    return e
