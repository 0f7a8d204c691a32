"""Adam for one parameter group, without ``torch.optim.Optimizer``.

Every pipeline job is a fresh process, and the first use of a ``torch.optim.Optimizer`` imports
``torch._dynamo`` (1.5–2 s) only to wrap its methods in ``dynamo.disable``: longer than a
whole smoke-scale training run. ``Adam`` keeps the state itself and calls torch's own functional
Adam (``torch.optim.adam.adam``) exactly as ``torch.optim.Adam.step`` does, so the updates are
bit-identical to ``torch.optim.Adam(params, lr, fused=...)`` (tested).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam


class Adam:
    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool | None = None):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.fused = lr, betas, eps, fused
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # per-parameter step counts where torch.optim.Adam keeps them: on the device when fused
        self.steps = [torch.zeros((), device=p.device if fused else "cpu") for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient (torch.optim.Adam skips the others)."""
        used = [i for i, p in enumerate(self.params) if p.grad is not None]
        params, exp_avg, exp_avg_sq, steps = ([xs[i] for i in used] for xs in
                                              (self.params, self.exp_avg, self.exp_avg_sq, self.steps))
        adam(params, [p.grad for p in params], exp_avg, exp_avg_sq, [], steps, foreach=None, fused=self.fused,
             amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=0.0, eps=self.eps,
             maximize=False)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)
