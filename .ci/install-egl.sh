#!/usr/bin/env bash
# Mesa's EGL with its software renderer, so MuJoCo draws offscreen without a GPU
# (MUJOCO_GL=egl: the rollout videos, tests/test_videos.py). Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri
