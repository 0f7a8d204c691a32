"""Final evaluation of a trained model on one split of its task set."""
from __future__ import annotations

import torch

from metarl.tasksets import read_taskset
from metarl.training import build_method, evaluation_rows, label_run
from metarl.utils.io import save_csv
from metarl.utils.runtime import resolve_device, seed_everything


def evaluate(model_path, taskset_path, split: str, out_path, seed_offset: int = 10_000) -> None:
    saved = torch.load(model_path, map_location="cpu", weights_only=False)
    spec = saved["spec"]
    torch.set_num_threads(spec.get("threads", 1))
    device = resolve_device(spec.get("device", "auto"))
    # evaluation noise (initial states, sampled latents) is seeded apart from training's
    seed_everything(spec["seed"] + seed_offset)
    method = build_method(spec, taskset_path, device)
    method.model.load_state_dict(saved["model"])
    method.env_steps = saved["env_steps"]
    rows = evaluation_rows(method, read_taskset(taskset_path), [split], spec.get("eval_tasks"))
    rows.insert(0, "env_steps", method.env_steps)
    save_csv(label_run(rows, spec), out_path)
