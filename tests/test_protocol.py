"""E5's common adaptation protocol (metarl.protocol), the random baseline and the run specs that
carry it: episodes are counted the same way for every method, and the rows say so."""
import math

import pandas as pd
import pytest
import torch
from conftest import CountingFamily

from metarl import config as metarl_config
from metarl.envs import get_family
from metarl.methods import FINAL_STAGE, get_algorithm
from metarl.methods.base import Method
from metarl.protocol import protocol_rows
from metarl.tasksets import generate_taskset
from metarl.training import evaluation_rows


class StubMethod(Method):
    """Adapts by counting: episode k of task t returns 10·t + (episodes consumed before it)."""

    Hyperparams = dict

    def __init__(self, shape_error=False):
        self.shape_error = shape_error
        self.calls = []

    def train_iteration(self):
        return {}

    def evaluate(self, tasks):
        raise AssertionError("the protocol must not call the method's own evaluate()")

    def adaptation_returns(self, tasks, episodes):
        self.calls.append((len(tasks), episodes))
        returns = torch.tensor([[10.0 * t + k for k in range(episodes)] for t in range(len(tasks))])
        return returns[:, :-1] if self.shape_error else returns


def test_protocol_rows_index_episodes_consumed():
    stub = StubMethod()
    rows = protocol_rows(stub, [{}, {}, {}], episodes=4)
    assert stub.calls == [(3, 4)]
    consumed = rows[rows.stage != FINAL_STAGE]
    assert sorted(consumed.stage.unique()) == ["consumed_0", "consumed_1", "consumed_2", "consumed_3"]
    for _, row in consumed.iterrows():  # consumed_k of task t is the stub's 10·t + k
        assert row["return"] == 10 * row["task"] + int(row["stage"].split("_")[1])
    final = rows[rows.stage == FINAL_STAGE].set_index("task")["return"]
    assert final.to_dict() == {0: 3.0, 1: 13.0, 2: 23.0}  # final = after K = 3 consumed


def test_protocol_rejects_wrong_shape_and_non_finite():
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected .* \(2, 3\)"):
        protocol_rows(StubMethod(shape_error=True), [{}, {}], episodes=3)

    class NaNMethod(StubMethod):
        def adaptation_returns(self, tasks, episodes):
            return torch.full((len(tasks), episodes), math.nan)

    with pytest.raises(ValueError, match="non-finite"):
        protocol_rows(NaNMethod(), [{}], episodes=2)
    with pytest.raises(ValueError, match="at least 1 episode"):
        protocol_rows(StubMethod(), [{}], episodes=0)


def test_evaluation_rows_use_the_protocol_only_when_asked():
    stub, tasks = StubMethod(), {"test": [{}, {}]}
    rows = evaluation_rows(stub, tasks, ["test"], protocol_episodes=2)
    assert list(rows.columns) == ["split", "task", "stage", "return"] and set(rows.split) == {"test"}
    with pytest.raises(AssertionError, match="own evaluate"):
        evaluation_rows(stub, tasks, ["test"])


def test_method_without_the_protocol_says_so():
    class Plain(StubMethod):
        adaptation_returns = Method.adaptation_returns

    with pytest.raises(NotImplementedError, match="Plain does not implement the common adaptation protocol"):
        protocol_rows(Plain(), [{}], episodes=2)


# ------------------------------------------------------------------------ the random baseline


def random_method(family_name: str):
    family = get_family(family_name)
    tasks = generate_taskset(family_name, 3)["splits"]
    train = "D" if "D" in tasks else "train"
    algo = get_algorithm("random")
    return algo(family, tasks, algo.make_hparams({}), train, torch.device("cpu")), tasks


def test_random_policy_sparse_return_matches_a_gymnasium_replay(monkeypatch):
    """The random baseline's protocol returns are the sparse (evaluation) rewards of its episodes:
    replaying its actions through the family's gymnasium env from the same starts gives the same
    per-episode sparse returns, and it plays exactly the protocol's episodes."""
    method, tasks = random_method("sparse_point_robot")
    # goals at and next to the start, so that the sparse return is nonzero (the dense one is < 0)
    family, test = method.family, [{"goal": [0.0, 0.0]}, {"goal": [0.1, 0.0]}, tasks["test"][0]]
    method.family = CountingFamily(family)
    recorded = []
    original = method._actions
    monkeypatch.setattr(method, "_actions", lambda n: recorded.append(original(n)) or recorded[-1])
    torch.manual_seed(0)
    returns = method.adaptation_returns(test, episodes=2)
    assert returns.shape == (3, 2)
    (env,) = method.family.envs
    assert env.resets == 2 and env.steps == 2 * family.horizon  # exactly 2 episodes per task
    assert (returns[0] > 0).all()
    for k in range(2):
        for t, task in enumerate(test):
            gym_env = family.make_gym(task).unwrapped
            gym_env.reset()
            gym_env.pos = env.starts[k][t].numpy().copy()
            total = 0.0
            for step in range(family.horizon):
                _, _, _, _, info = gym_env.step(recorded[k * family.horizon + step][t].numpy())
                total += info["sparse_reward"]
            assert returns[t, k].item() == pytest.approx(total, abs=1e-5)


def test_random_policy_is_uniform_over_discrete_and_box_actions():
    method, _ = random_method("gridworld")
    torch.manual_seed(0)
    counts = torch.bincount(method._actions(50_000), minlength=method.family.act_dim).double()
    assert counts.min() / counts.max() > 0.95
    method, _ = random_method("reacher_2link")
    actions = method._actions(20_000)
    assert (actions >= method.low).all() and (actions <= method.high).all()
    assert torch.allclose(actions.mean(0), (method.low + method.high) / 2, atol=0.02)


# ------------------------------------------------------------------------ config: E5's layers


def test_e5_run_specs(repo_config):
    config = dict(repo_config, scale="smoke")
    exp = config["experiments"]["E5"]
    runs = list(metarl_config.runs(config, "E5"))
    assert {f for f, _, _ in runs} == set(exp["scales"]["smoke"]["run_families"])
    spec = metarl_config.run_spec(config, "E5", "reacher_2link", "maml", 0)
    assert spec["train_split"] == "D" and spec["protocol_episodes"] == exp["protocol"]["families"]["reacher_2link"]
    assert spec["hparams"]["embedding"] == "none"  # the method's own settings stay under the cell's
    assert spec["hparams"]["policy_hidden"] == [16, 16]  # the cell's
    other = metarl_config.run_spec(config, "E5", "gridworld", "pearl", 0)
    assert other["protocol_episodes"] == exp["protocol"]["episodes"] and other["train_split"] == "train"
    # experiments without a protocol keep their specs (and job parameters, resume hashes) as before
    assert "protocol_episodes" not in metarl_config.run_spec(config, "E1", "gridworld", "vate", 0)


def test_cells_and_not_run_are_validated_and_applied(config):
    exp = config["experiments"]["E5"]
    exp["scales"]["quick"]["cells"] = {"vate": {"gridworld": {"iterations": 7, "hparams": {"lr": 0.5}}}}
    exp["not_run"] = {"tesp": {"cheetah_vel": "reason given"}}
    metarl_config.validate(config)
    spec = metarl_config.run_spec(config, "E5", "gridworld", "vate", 0)
    assert spec["iterations"] == 7 and spec["hparams"]["lr"] == 0.5
    assert ("cheetah_vel", "tesp", 0) not in set(metarl_config.runs(config, "E5"))
    exp["not_run"] = {"tesp": {"ant_goal_typo": "x"}}
    with pytest.raises(metarl_config.ConfigError, match="not_run"):
        metarl_config.validate(config)
    exp["not_run"] = {"ppo": {"gridworld": "x"}}
    with pytest.raises(metarl_config.ConfigError, match=r"not_run: method 'ppo'"):
        metarl_config.validate(config)


def test_random_policy_trains_nothing_and_evaluates(tmp_path):
    method, tasks = random_method("gridworld")
    assert method.train_iteration() == {} and method.env_steps == 0
    frame = method.evaluate(tasks["test"][:5])
    assert isinstance(frame, pd.DataFrame) and set(frame.stage) == {FINAL_STAGE} and len(frame) == 5


# ------------------------------------------------------------------------ every method, same count


E5_METHODS = ["random", "pearl", "vate", "rl2_10", "tesp", "maml"]


@pytest.mark.parametrize("method_name", E5_METHODS)
def test_every_method_plays_exactly_the_protocol_episodes(method_name, repo_config, tmp_path, monkeypatch):
    """Every E5 method, built from its smoke run spec on the sparse point robot (episodes never
    end early), steps exactly tasks x episodes x horizon env transitions in adaptation_returns
    (counted on the batched env class, whichever instances the method makes or caches), after
    resetting each env once per episode."""
    from conftest import smoke_job

    from metarl.training import build_method

    spec, taskset = smoke_job(repo_config, tmp_path, "E5", "sparse_point_robot", method_name)
    torch.manual_seed(0)
    method = build_method(spec, taskset, torch.device("cpu"))
    method.train_iteration()  # a trained state, as in evaluation
    env_class = type(method.family.make_batched(1))
    counts = {"steps": 0, "resets": 0}
    step, reset = env_class.step, env_class.reset

    def counting_step(self, actions):
        counts["steps"] += self.num_envs
        return step(self, actions)

    def counting_reset(self, *args, **kwargs):
        counts["resets"] += self.num_envs
        return reset(self, *args, **kwargs)

    monkeypatch.setattr(env_class, "step", counting_step)
    monkeypatch.setattr(env_class, "reset", counting_reset)
    tasks, episodes = method.tasks["test"][:3], 4
    returns = method.adaptation_returns(tasks, episodes)
    assert tuple(returns.shape) == (3, episodes) and torch.isfinite(returns).all()
    horizon = method.family.horizon
    assert counts == {"steps": 3 * episodes * horizon, "resets": 3 * episodes}
