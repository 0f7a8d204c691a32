"""config.yaml's ``compile`` switch (metarl.compiling): PEARL's compiled gradient step and
collection policy against the eager code, which tests/test_pearl_reference.py checks against oyster.

Compilation is slow on this CPU (tens of seconds cold; the inductor cache makes reruns faster),
so one small test covers both phases of the step, the policy forward and determinism."""
import numpy as np
import pytest
import torch

from metarl import compiling
from metarl.config import run_spec
from metarl.envs import get_family
from metarl.methods.pearl import PEARL

HP = {"hidden": 16, "layers": 2, "encoder_hidden": 16, "encoder_layers": 2, "meta_batch": 3, "rl_batch": 8,
      "context_batch": 5, "lr": 3e-3, "kl_lambda": 0.5, "gamma": 0.9, "tau": 0.05}
STEPS = 3


def pearl(compile_mode: str) -> PEARL:
    torch.manual_seed(0)
    family = get_family("point_robot")
    method = PEARL(family, family.sample_splits(np.random.default_rng(0)), PEARL.make_hparams(HP), "train",
                   torch.device("cpu"))
    method.use_compile(compile_mode)
    n, steps, width, c = len(method.train_tasks), 20, method.buffer.data.shape[2], method.cols
    rows = torch.randn(n, steps, width)
    rows[..., c["act"]] = torch.rand(n, steps, method.act_dim) * 2 - 1
    rows[..., c["term"]] = (torch.rand(n, steps, 1) < 0.2).float()
    method.buffer.add(torch.arange(n), rows, torch.ones(n, steps, dtype=torch.bool), context=True)
    return method


def train(method: PEARL) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Parameters after STEPS gradient steps, and collection's policy actions, on fixed draws."""
    for k in range(STEPS):
        torch.manual_seed(100 + k)
        method.update()
    torch.manual_seed(200)
    x = torch.randn(4, method.obs_dim + method.latent.dim)
    actions = torch.stack([method._act(x, deterministic)[0] for deterministic in (False, True)])
    return [p.detach().clone() for p in method.model.parameters()], actions


@pytest.mark.slow
def test_compiled_pearl_agrees_with_eager_and_repeats():
    eager_params, eager_actions = train(pearl("off"))
    compiled = pearl("on")
    assert compiled._critic_losses is not compiled.critic_losses  # really the compiled path
    params, actions = train(compiled)
    again_params, again_actions = train(pearl("on"))
    for mine, eager, again in zip(params, eager_params, again_params, strict=True):
        torch.testing.assert_close(mine, eager, rtol=1e-4, atol=1e-5)
        assert torch.equal(mine, again)  # same seed, same numbers
    torch.testing.assert_close(actions, eager_actions, rtol=1e-4, atol=1e-5)
    assert torch.equal(actions, again_actions)
    # and training moved the weights, so agreement is not agreement at the initial weights
    assert not torch.allclose(eager_params[0], pearl("off").model.encoder[0].weight)


def test_compile_switch_reaches_the_method_and_reads_yaml_booleans(config):
    config["compile"] = False  # what YAML makes of an unquoted `compile: off`
    assert run_spec(config, "E3", "cheetah_vel", "pearl", 0)["compile"] == "off"
    config["compile"] = "on"
    assert run_spec(config, "E3", "cheetah_vel", "pearl", 0)["compile"] == "on"
    assert not compiling.resolve("off", torch.device("cpu"))
    assert compiling.resolve("on", torch.device("cpu"))
    with pytest.raises(ValueError, match="compile: 'fast'"):
        compiling.resolve("fast", torch.device("cpu"))
