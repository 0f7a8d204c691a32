"""Offscreen pictures of the MuJoCo task families.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported; on a
headless machine that must be ``egl`` (Mesa's software EGL works without a GPU) or
``osmesa`` (``apt-get install libosmesa6``). Importing this module first defaults it to
``egl``; ``MUJOCO_GL=osmesa python -m metarl.envs.render OUT_DIR`` picks OSMesa.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from PIL import Image

from metarl.envs import get_family
from metarl.envs.mujoco_batch import MUJOCO_FAMILIES


def render_family_frames(out_dir: str | Path, families=MUJOCO_FAMILIES, steps: int = 10, size: int = 480) -> list[Path]:
    """Save ``<family>.png``: each family's gymnasium env after ``steps`` random actions
    from its seed-0 start, so that the bodies are seen in motion; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in families:
        env = get_family(name).make_gym(render_mode="rgb_array", width=size, height=size)
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(steps):
            env.step(env.action_space.sample())
        frame = env.render()
        env.close()
        path = out_dir / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(frame)).save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in render_family_frames(sys.argv[1] if len(sys.argv) > 1 else "frames"):
        print(p)
