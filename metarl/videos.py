"""Rollout videos of a trained model on its first few test tasks: per task, the first
trajectory of the method's own evaluation (PEARL: z from the prior; TESP: before any fast
update) and the last one (PEARL: z from the posterior; TESP: after K fast updates).

Method-agnostic: the batched envs the method builds record their simulation states
(``MujocoBatchedEnv.recording``) while the method's ``evaluate`` runs, seeded as the final
evaluation is (metarl/evaluation.py); the gymnasium env of the family then renders those
states offscreen. MuJoCo reads ``MUJOCO_GL`` when first imported: this module defaults it to
``egl`` (Mesa's software EGL works without a GPU; ``MUJOCO_GL=osmesa`` is the alternative).
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import dataclass

import mujoco
import numpy as np
import torch
from PIL import Image, ImageDraw

from metarl.envs import get_family
from metarl.envs.base import Task
from metarl.envs.mujoco_batch import MujocoFamily, StateRecording
from metarl.tasksets import read_taskset
from metarl.training import build_method
from metarl.utils.checkpoints import load_model_file
from metarl.utils.io import atomic_path
from metarl.utils.runtime import resolve_device, seed_everything


@dataclass
class Trajectory:
    """One simulation's visited states, from its reset to the step that ended it."""

    task: Task
    qpos: np.ndarray  # (steps + 1, nq)
    qvel: np.ndarray  # (steps + 1, nv)


def trajectory(record: StateRecording, sim: int) -> Trajectory:
    """Simulation ``sim`` of a recorded episode, cut after its last step (frozen states dropped)."""
    done = np.array(record.done)[:, sim] if record.done else np.zeros(0, dtype=bool)
    steps = int(np.argmax(done)) + 1 if done.any() else len(done)
    return Trajectory(record.tasks[sim], np.array(record.qpos)[: steps + 1, sim], np.array(record.qvel)[: steps + 1, sim])


def first_and_last(recording: list[StateRecording], task: Task) -> tuple[Trajectory, Trajectory]:
    """The first and the last trajectory run on ``task`` (the same object the method was given),
    each from the first simulation that ran it in that episode."""
    runs = [(record, sims[0]) for record in recording
            if (sims := [i for i, t in enumerate(record.tasks) if t is task])]
    if not runs:
        raise ValueError("the evaluation recorded no trajectory on this task")
    return trajectory(*runs[0]), trajectory(*runs[-1])


def record_evaluation(model_path, taskset_path, split: str, num_tasks: int,
                      seed_offset: int = 10_000) -> tuple[str, list[Task], list[StateRecording]]:
    """Run the saved method's ``evaluate`` on the first ``num_tasks`` tasks of ``split`` with its
    batched envs recording; return the family's name, those tasks and the recorded episodes
    in the order they ran."""
    saved = load_model_file(model_path)
    spec = saved["spec"]
    torch.set_num_threads(spec.get("threads", 1))
    method = build_method(spec, taskset_path, resolve_device(spec.get("device", "auto")))
    if not isinstance(method.family, MujocoFamily):
        raise ValueError(f"videos need a MuJoCo family; {model_path} was trained on {spec['family']!r}")
    method.model.load_state_dict(saved["model"])
    tasks = read_taskset(taskset_path, spec["family"])
    if split not in tasks:
        raise KeyError(f"split {split!r} not in {taskset_path}; available: {sorted(tasks)}")
    tasks = tasks[split][:num_tasks]

    recording: list[StateRecording] = []
    make_batched = method.family.make_batched

    def recording_envs(*args, **kwargs):  # every env the method builds appends to one list
        env = make_batched(*args, **kwargs)
        env.recording = recording
        return env

    method.family.make_batched = recording_envs  # this method's own family instance only
    seed_everything(spec["seed"] + seed_offset)  # as the final evaluation (metarl/evaluation.py)
    method.evaluate(tasks)
    return spec["family"], tasks, recording


def render(family_name: str, traj: Trajectory, size: int, label: str, stride: int = 1) -> list[np.ndarray]:
    """Frames (H, W, 3) of every ``stride``-th state of the trajectory, ``label`` in the corner.
    Without shadows and reflections: Mesa's software renderer draws them 5x slower."""
    env = get_family(family_name).make_gym(task=traj.task, render_mode="rgb_array", width=size, height=size).unwrapped
    frames = []
    try:
        env.render()  # builds the env's renderer, whose scene flags persist across frames
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            env._renderer.scene.flags[flag] = False
        for qpos, qvel in zip(traj.qpos[::stride], traj.qvel[::stride]):
            env.set_state(qpos, qvel)
            image = Image.fromarray(np.ascontiguousarray(env.render()))
            ImageDraw.Draw(image).text((4, 4), label, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
            frames.append(np.asarray(image))
    finally:
        env.close()
    return frames


def write_video(model_path, taskset_path, out_video, out_strip, split: str = "test", num_tasks: int = 2,
                size: int = 256, stride: int = 1, strip_frames: int = 4) -> None:
    """The MP4 (per task: first trajectory, then last; every ``stride``-th state, in real time)
    and a PNG strip (one row per task: ``strip_frames`` evenly spaced frames of the first
    trajectory, then of the last)."""
    import imageio.v2 as imageio

    family_name, tasks, recording = record_evaluation(model_path, taskset_path, split, num_tasks)
    video, rows = [], []
    for i, task in enumerate(tasks):
        first, last = (render(family_name, traj, size, f"{split} task {i + 1}: {which} trajectory", stride)
                       for traj, which in zip(first_and_last(recording, task), ("first", "last")))
        video += first + last
        rows.append(np.concatenate([frames[j] for frames in (first, last)
                                    for j in np.linspace(0, len(frames) - 1, strip_frames).round().astype(int)], 1))
    fps = 1.0 / (get_family(family_name).dt * stride)  # real time
    with atomic_path(out_video) as tmp:
        # ffmpeg picks the container from the extension, so the temporary file gets one
        tmp_mp4 = tmp.with_suffix(".mp4")
        try:
            imageio.mimwrite(tmp_mp4, video, fps=fps, codec="libx264", quality=7, macro_block_size=1)
            os.replace(tmp_mp4, tmp)
        finally:
            if tmp_mp4.exists():
                tmp_mp4.unlink()
    with atomic_path(out_strip) as tmp:
        Image.fromarray(np.concatenate(rows, 0)).save(tmp, format="PNG")
