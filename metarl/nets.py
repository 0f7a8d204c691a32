"""Small network builders shared by the methods."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """``Linear -> activation`` for each hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), activation()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def normc(weight: Tensor, std: float) -> Tensor:
    """rllib's ``normc_initializer``, in place: Gaussian entries, each output unit's incoming
    weights (a row of an ``(out, in)`` weight) scaled to norm ``std``. Returns ``weight``."""
    with torch.no_grad():
        values = torch.randn_like(weight)
        return weight.copy_(values * std / values.pow(2).sum(-1, keepdim=True).sqrt())
