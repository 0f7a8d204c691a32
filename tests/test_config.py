"""config.yaml validation: bad input fails naming the bad key/value; resolution precedence."""
import subprocess

import pytest
from conftest import copy_workflow

from metarl import config as metarl_config
from metarl.config import ConfigError


def test_repo_config_is_valid(repo_config):
    metarl_config.validate(repo_config)


def _break(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


@pytest.mark.parametrize("path, value, expected", [
    (["scale"], "huge", ["scale", "'huge' is not one of", "smoke", "quick", "paper"]),
    (["plot", "stlye"], "white", ["plot", "stlye", "unexpected"]),
    (["resources", "train", "threads"], "two", ["resources.train.threads", "'two' is not of type 'integer'"]),
    (["experiments", "E1", "families"], ["gridwrld"], ["experiments.E1.families.0", "gridwrld", "gridworld", "cheetah_vel"]),
    (["methods", "vate", "algo"], "vatee", ["methods.vate.algo", "'vatee' is not one of", "pearl"]),
    (["experiments", "E1", "methods"], ["vate", "rl2_100"], ["experiments.E1.methods", "unknown method 'rl2_100'", "rl2_64"]),
    (["experiments", "E1", "scales", "quick", "seeds"], 0, ["experiments.E1.scales.quick.seeds", "minimum"]),
    (["experiments", "E1", "scales", "quick", "iterations"], KeyError, ["experiments.E1.scales.quick", "'iterations' is a required property"]),
    (["methods", "vate", "hparams", "lrr"], 1e-3, ["method 'vate'", "lrr", "allowed"]),
    (["experiments", "E9"], {}, ["experiments", "E9"]),
    (["device"], "tpu", ["device", "tpu"]),
    (["compile"], "fast", ["compile", "'fast' is not one of"]),
    (["experiments", "E1", "scales", "quick", "families"], {"point_robot": {"lr": 1.0}},
     ["experiments.E1.scales.quick.families", "point_robot", "gridworld"]),
    (["experiments", "E1", "scales", "quick", "family_budgets"], {"point_robot": {"iterations": 5}},
     ["experiments.E1.scales.quick.family_budgets", "point_robot", "gridworld"]),
    (["experiments", "E1", "scales", "quick", "family_budgets"], {"gridworld": {"iterationz": 5}},
     ["experiments.E1.scales.quick.family_budgets.gridworld", "iterationz", "unexpected"]),
])
def test_bad_config_names_the_problem(config, path, value, expected):
    with pytest.raises(ConfigError) as err:
        metarl_config.validate(_break(config, path, value))
    for fragment in expected:
        assert fragment in str(err.value)


def test_snakemake_refuses_bad_config(tmp_path, config):
    copy_workflow(tmp_path, _break(config, ["plot", "stlye"], "white"))
    result = subprocess.run(["snakemake", "-n", "--cores", "1"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "stlye" in result.stdout + result.stderr


def test_hyperparameter_precedence(config):
    config["methods"]["vate"]["hparams"] = {"lr": 1.0, "latent_dim": 3}
    config["methods"]["vate"]["families"] = {"gridworld": {"lr": 2.0}}
    exp = config["experiments"]["E1"]
    exp["overrides"] = {"vate": {"latent_dim": 4}}
    exp["scales"]["quick"]["hparams"] = {"lr": 5.0}
    exp["scales"]["quick"]["families"] = {"gridworld": {"latent_dim": 5, "lr": 7.0}}
    exp["scales"]["quick"]["methods"] = {"vate": {"latent_dim": 6}}
    config["scale"] = "quick"
    spec = metarl_config.run_spec(config, "E1", "gridworld", "vate", 2)
    assert spec["hparams"]["lr"] == 7.0 and spec["hparams"]["latent_dim"] == 6
    assert spec["seed"] == 2 and spec["algo"] == "vate"
    exp["scales"]["quick"]["methods"] = {}
    assert metarl_config.run_spec(config, "E1", "gridworld", "vate", 0)["hparams"]["latent_dim"] == 5
    exp["scales"]["quick"]["families"] = {}
    assert metarl_config.run_spec(config, "E1", "gridworld", "vate", 0)["hparams"]["latent_dim"] == 4
    exp["scales"]["quick"]["hparams"] = {}
    assert metarl_config.run_spec(config, "E1", "gridworld", "vate", 0)["hparams"]["lr"] == 2.0


def test_family_budget_sets_the_run_length_of_that_family_only(config):
    exp = config["experiments"]["E3"]
    exp["scales"]["quick"].update(iterations=20, eval_every=5,
                                  family_budgets={"sparse_point_robot": {"iterations": 100}})
    config["scale"] = "quick"
    sparse = metarl_config.run_spec(config, "E3", "sparse_point_robot", "pearl", 0)
    dense = metarl_config.run_spec(config, "E3", "point_robot", "pearl", 0)
    assert (sparse["iterations"], sparse["eval_every"]) == (100, 5)
    assert (dense["iterations"], dense["eval_every"]) == (20, 5)
    metarl_config.validate(config)
