"""E5 quick-settings probe for TESP / MAML (benchmarks/e5_tesp.md): train one seed in-process on one
thread and print one JSON line: CPU minutes of training, the protocol returns (Method.adaptation_returns,
EPISODES episodes, mean over the first 20 test tasks of task-set seed 3 and 3 plays) before and after
training, and a uniformly random policy's return (sparse reward where the env reports one).

Usage: PYTHONPATH=$PWD python benchmarks/e5_tesp_measure.py FAMILY {tesp,maml} ITERATIONS EPISODES 'HPARAMS_JSON' [TORCH_SEED]
"""
import json
import sys
import time

import numpy as np
import torch

from metarl.envs import get_family
from metarl.methods.tesp import TESP, Hyperparams
torch.set_num_threads(1)
family_name, variant, iterations, episodes, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
torch_seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
METHODS = {"tesp": {}, "maml": {"embedding": "none", "adapt_policy": True, "learn_alpha": False, "alpha_init": 0.1}}
family = get_family(family_name)
tasks = family.sample_splits(np.random.default_rng(3))
train_split = "D" if "D" in tasks else "train"
test = tasks["D" if "D" in tasks else "test"][:20]
torch.manual_seed(torch_seed)
method = TESP(family, tasks, Hyperparams(**{**METHODS[variant], **extra}), train_split, torch.device("cpu"))

def protocol(plays=3):
    with torch.random.fork_rng():
        torch.manual_seed(10_000)
        return torch.stack([method.adaptation_returns(test, episodes) for _ in range(plays)]).mean((0, 1))

def random_policy(plays=3):
    env = family.make_batched(len(test)); env.set_tasks(test)
    space = family.make_gym(test[0]).action_space
    total = torch.zeros(len(test))
    with torch.random.fork_rng():
        torch.manual_seed(10_000)
        for _ in range(plays):
            env.reset(seed=int(torch.randint(2**31 - 1, ())))
            for _ in range(family.horizon):
                if family.discrete:
                    a = torch.randint(family.act_dim, (len(test),))
                else:
                    lo, hi = torch.as_tensor(space.low), torch.as_tensor(space.high)
                    a = lo + (hi - lo) * torch.rand(len(test), family.act_dim)
                _, r, *_, info = env.step(a)
                total += info.get("sparse_reward", r)
    return (total / plays).mean().item()

t0 = time.process_time()
before = protocol()
eval_s = time.process_time() - t0
t0 = time.process_time()
log = []
for it in range(1, iterations + 1):
    m = method.train_iteration()
    if it % max(1, iterations // 5) == 0:
        log.append((it, round(m["return"], 2), round(time.process_time() - t0, 1)))
train_s = time.process_time() - t0
after = protocol()
print(json.dumps({"family": family_name, "variant": variant, "torch_seed": torch_seed, "iterations": iterations, "hparams": extra,
                  "train_cpu_min": round(train_s / 60, 2), "eval_cpu_s": round(eval_s, 1), "env_steps": method.env_steps,
                  "random_policy": round(random_policy(), 3), "init_protocol": [round(x, 3) for x in before.tolist()],
                  "trained_protocol": [round(x, 3) for x in after.tolist()], "train_log": log}))
