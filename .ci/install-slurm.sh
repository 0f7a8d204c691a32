#!/usr/bin/env bash
# Install a minimal single-node SLURM (controller + compute daemon + client
# tools) and munge, for tests/test_slurm.py.  Needs root (or sudo).
# CI then runs (as root, or as a user with passwordless sudo):
#   .ci/install-slurm.sh && python -m pytest -m slurm tests/test_slurm.py
#
# Debian/Ubuntu: `slurm-wlm` is a metapackage pulling slurmctld, slurmd and
# slurm-client; munge is its authentication daemon.  With
# --no-install-recommends this took 13 s (apt-get update included) on a
# fresh Debian 12 container (Slurm 22.05); not measured on Ubuntu runners.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge
# Sanity: the binaries tests/slurm/cluster.sh relies on.
for b in munged slurmctld slurmd sinfo squeue sbatch srun scontrol scancel; do
  command -v "$b" >/dev/null || { echo "install-slurm.sh: $b missing after install" >&2; exit 1; }
done
echo "install-slurm.sh: $(slurmctld -V) installed"
