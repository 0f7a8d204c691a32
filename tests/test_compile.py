"""config.yaml's ``compile`` switch (metarl.compiling): each method's compiled hot paths against
its eager code, which the methods' own tests check against independent references (oyster's step
for PEARL, per-task loops for TESP, step-by-step re-implementations for VATE).

Compilation is slow on this CPU (tens of seconds cold; the inductor cache makes reruns faster),
so one small test per method covers its compiled paths and determinism. The tests take the
``device`` fixture: benchmarks/gpu_check.sh runs them on CUDA, where compiled means CUDA graphs."""
import numpy as np
import pytest
import torch
from test_tesp import PointGoalFamily
from test_tesp import TINY as TESP_TINY

from metarl import compiling
from metarl.config import run_spec
from metarl.envs import get_family
from metarl.methods.pearl import PEARL
from metarl.methods.tesp import TESP
from metarl.methods.vate import VATE

HP = {"hidden": 16, "layers": 2, "encoder_hidden": 16, "encoder_layers": 2, "meta_batch": 3, "rl_batch": 8,
      "context_batch": 5, "lr": 3e-3, "kl_lambda": 0.5, "gamma": 0.9, "tau": 0.05}
STEPS = 3


def pearl(compile_mode: str, device: torch.device) -> PEARL:
    torch.manual_seed(0)
    family = get_family("point_robot")
    method = PEARL(family, family.sample_splits(np.random.default_rng(0)), PEARL.make_hparams(HP), "train", device)
    method.use_compile(compile_mode)
    n, steps, width, c = len(method.train_tasks), 20, method.buffer.data.shape[2], method.cols
    rows = torch.randn(n, steps, width)
    rows[..., c["act"]] = torch.rand(n, steps, method.act_dim) * 2 - 1
    rows[..., c["term"]] = (torch.rand(n, steps, 1) < 0.2).float()
    method.buffer.add(torch.arange(n, device=device), rows.to(device),
                      torch.ones(n, steps, dtype=torch.bool, device=device), context=True)
    return method


def train(method: PEARL) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Parameters after STEPS gradient steps, and collection's policy actions, on fixed draws."""
    for k in range(STEPS):
        torch.manual_seed(100 + k)
        method.update()
    torch.manual_seed(200)
    x = torch.randn(4, method.obs_dim + method.latent.dim, device=method.device)
    actions = torch.stack([method._act(x, deterministic)[0] for deterministic in (False, True)])
    return [p.detach().clone() for p in method.model.parameters()], actions


@pytest.mark.slow
def test_compiled_pearl_agrees_with_eager_and_repeats(device):
    eager_params, eager_actions = train(pearl("off", device))
    compiled = pearl("on", device)
    assert compiled._critic_losses is not compiled.critic_losses  # really the compiled path
    params, actions = train(compiled)
    again_params, again_actions = train(pearl("on", device))
    for mine, eager, again in zip(params, eager_params, again_params, strict=True):
        torch.testing.assert_close(mine, eager, rtol=1e-4, atol=1e-5)
        assert torch.equal(mine, again)  # same seed, same numbers
    torch.testing.assert_close(actions, eager_actions, rtol=1e-4, atol=1e-5)
    assert torch.equal(actions, again_actions)
    # and training moved the weights, so agreement is not agreement at the initial weights
    assert not torch.allclose(eager_params[0], pearl("off", device).model.encoder[0].weight)


def test_compile_switch_reaches_the_method_and_reads_yaml_booleans(config):
    config["compile"] = False  # what YAML makes of an unquoted `compile: off`
    assert run_spec(config, "E3", "cheetah_vel", "pearl", 0)["compile"] == "off"
    config["compile"] = "on"
    assert run_spec(config, "E3", "cheetah_vel", "pearl", 0)["compile"] == "on"
    assert not compiling.resolve("off", torch.device("cpu"))
    assert compiling.resolve("on", torch.device("cpu"))
    with pytest.raises(ValueError, match="compile: 'fast'"):
        compiling.resolve("fast", torch.device("cpu"))


def assert_agree_and_repeat(eager: list[torch.Tensor], compiled: list[torch.Tensor], again: list[torch.Tensor],
                            initial: list[torch.Tensor]) -> None:
    """Compiled within float tolerance of eager, bit-identical on a rerun, and training moved the weights."""
    for mine, reference, rerun in zip(compiled, eager, again, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-5)
        assert torch.equal(mine, rerun)  # same seed, same numbers
    assert any(not torch.allclose(a, b) for a, b in zip(eager, initial, strict=True))


def tesp(compile_mode: str, device: torch.device) -> TESP:
    torch.manual_seed(0)
    family = PointGoalFamily()  # episodes of different lengths, so the encoder's masking is exercised
    method = TESP(family, family.sample_splits(np.random.default_rng(0)), TESP.make_hparams(TESP_TINY), "train",
                  device)
    method.use_compile(compile_mode)
    return method


def tesp_run(method: TESP) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Parameters (learning rates included) after a meta-update, and a test evaluation's returns."""
    method.train_iteration()
    returns = torch.tensor(method.evaluate(method.tasks["test"])["return"].to_numpy())
    return [p.detach().clone() for p in method.model.parameters()], returns


@pytest.mark.slow
def test_compiled_tesp_agrees_with_eager_and_repeats(device):
    initial = [p.detach().clone() for p in tesp("off", device).model.parameters()]
    eager_params, eager_returns = tesp_run(tesp("off", device))
    compiled = tesp("on", device)
    assert compiled._pg_loss is not compiled.pg_loss and compiled._surrogate is not compiled.surrogate
    params, returns = tesp_run(compiled)
    again_params, again_returns = tesp_run(tesp("on", device))
    assert_agree_and_repeat(eager_params, params, again_params, initial)
    torch.testing.assert_close(returns, eager_returns, rtol=1e-4, atol=1e-4)
    assert torch.equal(returns, again_returns)


def vate(compile_mode: str, device: torch.device, **hparams) -> VATE:
    torch.manual_seed(0)
    family = get_family("gridworld")
    hparams = {"num_envs": 8, "encoder_hidden": 16, "embed_dim": 8, "policy_hidden": 16, "decoder_hidden": 16,
               "latent_dim": 4, "ppo_epochs": 2, "minibatches": 2, **hparams}
    method = VATE(family, family.sample_splits(np.random.default_rng(0)), VATE.make_hparams(hparams), "train",
                  device)
    method.use_compile(compile_mode)
    return method


def vate_run(method: VATE) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Parameters after three iterations and a greedy evaluation's returns."""
    for _ in range(3):
        method.train_iteration()
    returns = torch.tensor(method.evaluate(method.tasks["test"][:8])["return"].to_numpy())
    return [p.detach().clone() for p in method.model.parameters()], returns


@pytest.mark.slow
@pytest.mark.parametrize("hparams", [{}, {"detach_encoder": True, "vae_buffer_size": 16, "vae_batch": 4}],
                         ids=["vate", "vate_detach_vae_buffer"])
def test_compiled_vate_agrees_with_eager_and_repeats(hparams, device):
    initial = [p.detach().clone() for p in vate("off", device, **hparams).model.parameters()]
    eager_params, eager_returns = vate_run(vate("off", device, **hparams))
    compiled = vate("on", device, **hparams)
    assert compiled._losses is not compiled.losses and compiled._act is not compiled.model.act
    params, returns = vate_run(compiled)
    again_params, again_returns = vate_run(vate("on", device, **hparams))
    assert_agree_and_repeat(eager_params, params, again_params, initial)
    assert torch.equal(returns, eager_returns) and torch.equal(returns, again_returns)  # greedy on the gridworld
