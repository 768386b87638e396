"""What every optimizer offers: one parameter group, ``step(frozen=...)``, ``zero_grad``.

gradlab's optimizers follow ``torch.optim``'s update rules to the letter (the tests compare
them update for update) but work on whole lists of tensors with ``torch._foreach_*`` ops
and skip the lazy ``torch._dynamo`` import that constructing a ``torch.optim`` optimizer
costs (about 2 s per run). They have the ``param_groups`` / ``step()`` interface that
``torch.amp.GradScaler`` uses (``unscale_`` reads ``param_groups``; ``step`` is skipped
when a gradient overflowed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch

if TYPE_CHECKING:
    from gradlab.config import OptimConfig


Tensors = list[torch.Tensor] | tuple[torch.Tensor, ...]
"""Tensors as ``torch._foreach_*`` ops take and return them."""


class Optimizer:
    """One parameter group of named tensors, updated by :meth:`update`.

    Subclasses set ``name`` (``optim.name``), ``keys`` (the ``optim`` keys they read besides
    ``lr``; any other optimizer's key given in a config is an error) and ``reference`` (the
    ``torch.optim`` class they reproduce), and implement :meth:`update`.

    Parameters named in ``step(frozen=...)`` sit out that step entirely: no weight decay and
    no state update (moments, step counts and momentum buffers resume where they were when
    the parameter takes part again), so they stay bit-identical. ``torch.optim`` treats a
    parameter whose ``grad`` is None the same way.
    """

    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    reference: ClassVar[str] = ""

    def __init__(self, params: dict[str, torch.Tensor], cfg: OptimConfig) -> None:
        self.named = dict(params)
        self.param_groups: list[dict[str, Any]] = [
            {"params": list(self.named.values()), "lr": cfg.lr}
        ]
        self.cfg = cfg
        self.state: dict[str, dict[str, Any]] = {}
        """Per parameter name: its step count and buffers, created at its first step."""

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = value

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """A copy of :attr:`state` (step counts and buffers), for a checkpoint."""
        return {
            name: {
                k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()
            }
            for name, s in self.state.items()
        }

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Put back what :meth:`state_dict` gave, buffers on their parameters' device."""
        self.state = {
            name: {
                k: v.to(self.named[name].device) if isinstance(v, torch.Tensor) else v
                for k, v in s.items()
            }
            for name, s in state.items()
        }

    def zero_grad(self) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self, frozen: frozenset[str] = frozenset()) -> None:
        """Update every parameter not named in ``frozen`` from its ``.grad`` (left as is)."""
        names = [n for n in self.named if n not in frozen]
        if names:
            params = [self.named[n] for n in names]
            # the engines fill every gradient before a step
            self.update(names, params, cast(list[torch.Tensor], [p.grad for p in params]))

    def update(self, names: list[str], params: list[torch.Tensor], grads: Tensors) -> None:
        """Apply one step to ``params`` (in place) from ``grads`` (never modified)."""
        raise NotImplementedError

    def states(
        self, names: list[str], like: list[torch.Tensor], *buffers: str
    ) -> list[dict[str, Any]]:
        """The state of each named parameter, its step count advanced by one; a parameter's
        first step creates it with ``buffers`` as zeros shaped like the parameter."""
        states = []
        for name, p in zip(names, like, strict=True):
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = {"step": 0}
                state.update(
                    {b: torch.zeros_like(p, memory_format=torch.preserve_format) for b in buffers}
                )
            state["step"] += 1
            states.append(state)
        return states
