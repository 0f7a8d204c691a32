"""metarl.optim.Adam is torch.optim.Adam without its torch._dynamo import: same numbers, bit for bit."""
import copy

import pytest
import torch

from metarl.optim import Adam


@pytest.mark.parametrize("fused", [None, True])
def test_adam_updates_equal_torch_adam_bit_for_bit(fused):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2), torch.nn.Linear(2, 2))
    reference, initial = copy.deepcopy(net), copy.deepcopy(net)
    ours, theirs = Adam(net.parameters(), lr=3e-3, fused=fused), torch.optim.Adam(reference.parameters(), lr=3e-3, fused=fused)
    x = torch.randn(64, 4)
    for step in range(30):
        for model, opt in ((net, ours), (reference, theirs)):
            opt.zero_grad()
            # the last layer gets no gradient on odd steps: both must skip it, step count included
            out = model[:3](x) if step % 2 else model(x)
            (out ** 2).mean().backward()
            opt.step()
        if step == 10:  # learning-rate schedules set the rate between steps
            ours.lr, theirs.param_groups[0]["lr"] = 1e-3, 1e-3
    for p, q, p0 in zip(net.parameters(), reference.parameters(), initial.parameters(), strict=True):
        assert torch.equal(p, q)
        assert not torch.equal(p, p0)  # every layer was trained


def test_adam_state_round_trip_continues_identically():
    torch.manual_seed(1)
    net = torch.nn.Linear(3, 3)
    x = torch.randn(8, 3)

    def step(model, opt):
        opt.zero_grad()
        (model(x) ** 2).sum().backward()
        opt.step()

    opt = Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        step(net, opt)
    clone = copy.deepcopy(net)
    restored = Adam(clone.parameters(), lr=0.5)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(5):
        step(net, opt)
        step(clone, restored)
    assert restored.lr == 1e-2
    for p, q in zip(net.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)
