#!/usr/bin/env bash
# One prepared device check (issue 17): machine info, the device-aware tests, determinism of
# `metarl train` on the device, `metarl bench pearl|tesp|vate`, per-phase profiles of short
# paper-scale training slices through metarl.training.train, and the projected wall time of full
# paper-scale runs and of the whole paper-scale DAG on 1 and 8 devices.
#
#   benchmarks/gpu_check.sh OUT_DIR [--device cuda|cpu] [--tiny]
#
# Everything measured goes into OUT_DIR/gpu_check.md; every step's full log into
# OUT_DIR/logs.tar.gz (two files: the device tool brings back at most eight). The steps run in
# order of importance under one time budget (BUDGET_S, default 450 s): a step gets what is left
# of it (capped per step) and is skipped when under 15 s remain, so the script ends in under
# 8 minutes. --tiny runs every step at the config's smoke scale (a CPU dry run of the script:
# its projections only illustrate the arithmetic).
set -u

usage() { echo "usage: $0 OUT_DIR [--device cuda|cpu] [--tiny]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$(realpath -m "$1"); shift
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "--device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export METARL_TEST_DEVICE=$DEVICE
# no step renders, and a GPU machine may lack the EGL libraries MuJoCo's default backend loads
export MUJOCO_GL=${MUJOCO_GL:-disable}
PY=${PYTHON:-python}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
REPORT=$OUT/gpu_check.md
BUDGET_S=${BUDGET_S:-450}
START=$(date +%s)

if [ "$TINY" = 1 ]; then
  SCALE=smoke; BENCH_SCALES="smoke"; GRAD_STEPS=3; PEARL_IT=2; TESP_IT=2; VATE_IT=4; E4_IT=2
else
  SCALE=paper; BENCH_SCALES="quick paper"; GRAD_STEPS=50; PEARL_IT=2; TESP_IT=2; VATE_IT=20; E4_IT=2
fi

: > "$WORK/steps.md"
# step NAME CAP_SECONDS COMMAND...: run under the remaining budget, log to $WORK/NAME.log
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt 15 ]; then
    echo "| $name | skipped: time budget spent | 0 |" >> "$WORK/steps.md"; echo "skip $name"; return
  fi
  local limit=$(( cap < left ? cap : left ))
  local t0; t0=$(date +%s%N)
  echo "== $name (limit ${limit}s)"
  timeout -k 5 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local status="ok"
  [ "$rc" = 0 ] || status="exit code $rc"
  [ "$rc" = 124 ] && status="timed out after ${limit}s"
  printf '| %s | %s | %d.%d |\n' "$name" "$status" $(( ms / 1000 )) $(( ms % 1000 / 100 )) >> "$WORK/steps.md"
}

profile() {  # profile NAME EXPERIMENT FAMILY METHOD ITERATIONS CAP_SECONDS
  step "$1" "$6" "$PY" -m metarl bench profile --experiment "$2" --family "$3" --method "$4" --scale "$SCALE" \
    --iterations "$5" --device "$DEVICE" --threads 1 --project --out "$WORK/$1.md" --json "$WORK/$1.json"
}

# ---------------------------------------------------------------------------------- the steps
step machine 30 bash -c '
  if command -v nvidia-smi > /dev/null; then nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  else echo "nvidia-smi: not found (no NVIDIA driver on this machine)"; fi
  '"$PY"' -c "
import os, platform, torch
print(\"torch\", torch.__version__, \"| CUDA build\", torch.version.cuda, \"| cuDNN\", torch.backends.cudnn.version())
print(\"CUDA available:\", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f\"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs\")
print(\"Python\", platform.python_version(), \"|\", os.cpu_count(), \"CPU cores | load average\", os.getloadavg())
"'

# the test files with a test taking the `device` fixture (tests/conftest.py): only those run on it
DEVICE_TESTS=$(grep -lE "def test_\w+\([^)]*\bdevice\b" tests/test_*.py | tr '\n' ' ')
step tests 120 "$PY" -m pytest -q -m "not slow" -p no:cacheprovider $DEVICE_TESTS

step bench_pearl 120 "$PY" -m metarl bench pearl --family cheetah_vel --scale $BENCH_SCALES --device "$DEVICE" \
  --threads 1 --grad-steps "$GRAD_STEPS" --out "$WORK/bench_pearl.md"

# determinism of the real driver on the device: two smoke runs per algorithm, same seed
step determinism 90 "$PY" - "$DEVICE" "$WORK/det" <<'EOF'
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from metarl.config import run_spec
from metarl.tasksets import write_taskset
from metarl.training import train

device, work = sys.argv[1], Path(sys.argv[2])
config = yaml.safe_load(Path("config.yaml").read_text())
config["scale"] = "smoke"
print("| run (smoke scale, same seed twice) | train_log + curve | model parameters |")
print("|---|---|---|")
for experiment, family, method in [("E1", "gridworld", "vate"), ("E2", "reacher_2link", "tesp"),
                                   ("E3", "point_robot", "pearl")]:
    spec = {**run_spec(config, experiment, family, method, seed=0), "device": device}
    write_taskset(family, config["taskset_seed"], work / f"{family}.json")
    runs = []
    for attempt in (1, 2):
        out = work / f"{method}{attempt}"
        train(spec, work / f"{family}.json", out, work / f"resume{attempt}.pt", log=lambda line: None)
        logs = pd.read_csv(out / "train_log.csv").drop(columns="iteration_s")  # wall time differs
        runs.append((pd.concat([logs, pd.read_csv(out / "curve.csv")]),
                     torch.load(out / "model.pt", weights_only=False)["model"]))
    (log_a, model_a), (log_b, model_b) = runs
    same_log = log_a.equals(log_b)
    diff = max(float((model_a[k].float() - model_b[k].float()).abs().max()) for k in model_a)
    print(f"| {experiment} {family} {method} | {'identical' if same_log else 'DIFFER'} | "
          f"{'identical' if diff == 0 else f'max abs difference {diff:.3g}'} |")
EOF

profile slice_pearl_cheetah_vel E3 cheetah_vel pearl "$PEARL_IT" 180
profile slice_vate_gridworld E1 gridworld vate "$VATE_IT" 90
profile slice_tesp_reacher_2link E2 reacher_2link tesp "$TESP_IT" 180
profile slice_pearl_dir24 E4 dirichlet_point_robot pearl_dir24 "$E4_IT" 90

step projection 30 "$PY" - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

import yaml

from metarl.profiling import dag_projection

work = Path(sys.argv[1])
measured = [json.loads(p.read_text()) for p in sorted(work.glob("slice_*.json"))]
config = yaml.safe_load(Path("config.yaml").read_text())
config["scale"] = "paper"
print(dag_projection(config, measured) if measured else "no slice finished: nothing to project")
EOF

# compile: on (inductor; CUDA graphs on CUDA), after the slices and their projection: a cold first
# compile takes minutes on some machines and must not cost the numbers above
step bench_pearl_compiled 150 "$PY" -m metarl bench pearl --family cheetah_vel --scale $BENCH_SCALES \
  --device "$DEVICE" --mode compiled --threads 1 --grad-steps "$GRAD_STEPS" --out "$WORK/bench_pearl_compiled.md"
# compiled against eager, and compiled twice, per method (tests/test_compile.py, marked slow: they
# compile); on CUDA this is the cudagraph path
step compiled_tests 150 "$PY" -m pytest -q -m slow -p no:cacheprovider tests/test_compile.py
step bench_vate 60 "$PY" -m metarl bench vate --scale $BENCH_SCALES --device "$DEVICE" --threads 1 \
  --out "$WORK/bench_vate.md"
step bench_tesp 150 "$PY" -m metarl bench tesp --families reacher_2link --scale $SCALE --device "$DEVICE" \
  --threads 1 --out "$WORK/bench_tesp.md"

step bench_vate_compiled 90 "$PY" -m metarl bench vate --scale $BENCH_SCALES --device "$DEVICE" --mode compiled \
  --threads 1 --out "$WORK/bench_vate_compiled.md"

# ---------------------------------------------------------------------------------- the report
section() {  # section TITLE FILE [LOG]: the file's Markdown, else the end of the log
  echo; echo "## $1"; echo
  if [ -s "$2" ]; then cat "$2"
  elif [ -n "${3:-}" ] && [ -s "$3" ]; then echo '```'; tail -n 25 "$3"; echo '```'
  else echo "(no output)"; fi
}
{
  echo "# gpu_check: device $DEVICE$([ "$TINY" = 1 ] && echo ', --tiny (smoke sizes)')"
  echo
  if [ "$DEVICE" = cpu ]; then
    echo "**CPU DRY RUN: no GPU was used. Nothing below is a GPU figure; it shows what the script"
    echo "measures and that every step runs.**"
  fi
  [ "$TINY" = 1 ] && echo "Sizes are the config's smoke scale, so the projections below only illustrate the arithmetic."
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(( $(date +%s) - START )) s in all (budget ${BUDGET_S} s)."
  echo
  echo "| step | status | seconds |"; echo "|---|---|---|"; cat "$WORK/steps.md"
  echo; echo "## Machine"; echo; echo '```'; cat "$WORK/machine.log" 2>/dev/null; echo '```'
  echo; echo "## Tests on the device (METARL_TEST_DEVICE=$DEVICE): the tests taking the \`device\` fixture, in $DEVICE_TESTS"
  echo; echo '```'; tail -n 15 "$WORK/tests.log" 2>/dev/null; echo '```'
  section "Determinism of metarl train on the device" "$WORK/determinism.log"
  echo; echo "## Compiled against eager and repeated (tests/test_compile.py, slow tests, on $DEVICE)"
  echo; echo '```'; tail -n 25 "$WORK/compiled_tests.log" 2>/dev/null; echo '```'
  section "metarl bench pearl" "$WORK/bench_pearl.md" "$WORK/bench_pearl.log"
  section "metarl bench pearl, compiled" "$WORK/bench_pearl_compiled.md" "$WORK/bench_pearl_compiled.log"
  section "metarl bench vate" "$WORK/bench_vate.md" "$WORK/bench_vate.log"
  section "metarl bench vate, compiled" "$WORK/bench_vate_compiled.md" "$WORK/bench_vate_compiled.log"
  section "metarl bench tesp" "$WORK/bench_tesp.md" "$WORK/bench_tesp.log"
  echo; echo "## Training slices at scale $SCALE through metarl.training.train, per phase"
  for s in slice_pearl_cheetah_vel slice_vate_gridworld slice_tesp_reacher_2link slice_pearl_dir24; do
    section "$s" "$WORK/$s.md" "$WORK/$s.log"
  done
  echo; echo "## Projected paper-scale wall time of the whole DAG's training runs"
  echo
  echo "Per run: first iteration + (iterations - 1) x mean later iteration + curve evaluations x measured"
  echo "evaluation, from the slice of the same experiment (families and methods not measured take their"
  echo "experiment's slice: an approximation, e.g. humanoid steps cost more than cheetah's, and several"
  echo "MuJoCo families do 4000 gradient steps per iteration where cheetah_vel does 2000). Final"
  echo "evaluation jobs and scheduler overhead are not included."
  [ "$TINY" = 1 ] && echo && echo "**--tiny: smoke-scale iteration times stretched to paper-scale iteration counts; not a forecast.**"
  echo
  cat "$WORK/projection.log" 2>/dev/null
} > "$REPORT"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" . 2>/dev/null
echo "wrote $REPORT and $OUT/logs.tar.gz in $(( $(date +%s) - START )) s"
