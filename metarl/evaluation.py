"""Final evaluation of a trained model on the evaluation splits of its task set."""
from __future__ import annotations

import pandas as pd
import torch

from metarl.tasksets import read_taskset
from metarl.training import build_method, evaluation_rows, label_run
from metarl.utils.checkpoints import load_model_file
from metarl.utils.io import save_csv
from metarl.utils.runtime import resolve_device, seed_everything


def evaluate(model_path, taskset_path, splits: list[str], out_path, seed_offset: int = 10_000) -> None:
    saved = load_model_file(model_path)
    spec = saved["spec"]
    torch.set_num_threads(spec.get("threads", 1))
    device = resolve_device(spec.get("device", "auto"))
    method = build_method(spec, taskset_path, device)
    method.model.load_state_dict(saved["model"])
    method.env_steps = saved["env_steps"]
    tasks = read_taskset(taskset_path, spec["family"])
    frames = []
    for split in splits:
        # evaluation noise (initial states, sampled latents) is seeded apart from training's and
        # afresh per split, so a split's numbers do not depend on which splits came before it
        seed_everything(spec["seed"] + seed_offset)
        frames.append(evaluation_rows(method, tasks, [split], spec.get("eval_tasks"), spec.get("protocol_episodes")))
    rows = pd.concat(frames, ignore_index=True)
    rows.insert(0, "env_steps", method.env_steps)
    save_csv(label_run(rows, spec), out_path)
