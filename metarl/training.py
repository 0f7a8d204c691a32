"""The meta-training driver shared by every method: iterate, evaluate on a schedule, log
progress, checkpoint periodically and resume exactly after SIGTERM/SIGKILL/requeue.

A *run spec* is the resolved slice of config.yaml for one (experiment, family, method, seed)
job (see metarl.config.run_spec). The resume checkpoint lives outside the job's declared
outputs, keyed by a hash of the spec so a changed config never resumes a stale run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from metarl.envs import get_family
from metarl.methods import FINAL_STAGE, Method, get_algorithm
from metarl.protocol import protocol_rows
from metarl.tasksets import read_taskset
from metarl.utils.checkpoints import load_checkpoint, plain, previous_path, save_checkpoint
from metarl.utils.errors import CheckpointError, NonFiniteError
from metarl.utils.io import save_csv, save_torch
from metarl.utils.runtime import (
    isolated_rng,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)
from metarl.utils.tensorboard import TensorBoardLog


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_method(spec: dict[str, Any], taskset_path, device: torch.device) -> Method:
    algo = get_algorithm(spec["algo"])
    method = algo(family=get_family(spec["family"]), tasks=read_taskset(taskset_path, spec["family"]),
                  hparams=algo.make_hparams(spec["hparams"]), train_split=spec["train_split"],
                  device=device)
    method.use_compile(spec.get("compile", "off"))  # specs from before the switch ran eager
    return method


RUN_KEYS = ["experiment", "family", "method", "seed"]
# learning-curve evaluations draw from seed + offset + iteration, apart from training and from
# the final evaluation (metarl.evaluation)
CURVE_EVAL_SEED_OFFSET = 20_000


def evaluation_rows(method: Method, tasks: dict, splits: list[str], limit: int | None = None,
                    protocol_episodes: int | None = None) -> pd.DataFrame:
    """Evaluate on every split (its first ``limit`` tasks if given: small scales save time), by the
    method's own ``evaluate`` or, with ``protocol_episodes``, by the common protocol (metarl.protocol)."""
    frames = []
    for split in splits:
        if split not in tasks:
            raise KeyError(f"split {split!r} not in the task set; available: {sorted(tasks)}")
        frame = (method.evaluate(tasks[split][:limit]) if protocol_episodes is None
                 else protocol_rows(method, tasks[split][:limit], protocol_episodes))
        frame.insert(0, "split", split)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def label_run(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """Prefix rows with the run's identity so aggregation only needs to concatenate files."""
    for position, key in enumerate(RUN_KEYS):
        frame.insert(position, key, spec[key])
    return frame


class _StopRequested:
    """Turns SIGTERM/SIGINT (SLURM preemption, time limit, Ctrl-C) into a checkpoint-and-exit."""

    def __enter__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.requested = True


def non_finite(metrics: dict[str, float], model: torch.nn.Module) -> str | None:
    """Name the first NaN/Inf among an iteration's metrics and the model's parameters, or None."""
    for key, value in metrics.items():
        if not math.isfinite(value):
            return f"loss/metric {key!r} = {value}"
    if not any(True for _ in model.parameters()):  # e.g. the random policy
        return None
    names, params = zip(*model.named_parameters(), strict=True)
    finite = torch.stack([p.detach().isfinite().all() for p in params])  # one device sync, not one per tensor
    if not bool(finite.all()):
        return f"parameter {names[int((~finite).nonzero()[0])]!r} holds NaN/Inf"
    return None


def read_resume_checkpoint(resume_path: Path, key: str, device: torch.device, log) -> tuple[dict, Path] | None:
    """The newest usable checkpoint of this config: ``resume_path``, else the ``.prev`` copy kept
    beside it; a corrupt file is reported and skipped, never raised as an unpickling traceback."""
    for path in (resume_path, previous_path(resume_path)):
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint(path, map_location=device)
        except CheckpointError as error:
            log(f"skipping unusable checkpoint: {error}")
            continue
        if not isinstance(ckpt, dict) or ckpt.get("spec_hash") != key:
            log(f"ignoring checkpoint {path}: written for a different config")
            continue
        return ckpt, path
    return None


def _last_checkpoint(resume_path: Path) -> str:
    kept = [str(p) for p in (resume_path, previous_path(resume_path)) if p.exists()]
    return " and ".join(kept) if kept else "none written yet (rerunning starts from scratch)"


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train(spec: dict[str, Any], taskset_path, out_dir, resume_path, checkpoint_every_s: float = 60.0,
          log=print, tensorboard_dir=None) -> None:
    """Run (or resume) one training job and write ``model.pt``, ``train_log.csv``, ``curve.csv``
    into ``out_dir`` atomically; with ``tensorboard_dir``, mirror the logs there as event files."""
    out_dir, resume_path = Path(out_dir), Path(resume_path)
    torch.set_num_threads(spec.get("threads", 1))
    device = resolve_device(spec.get("device", "auto"))
    seed_everything(spec["seed"])
    method = build_method(spec, taskset_path, device)
    tasks = read_taskset(taskset_path, spec["family"])
    name = f"{spec['experiment']}/{spec['family']}/{spec['method']}/seed{spec['seed']}"
    key = spec_hash(spec)

    start, log_rows, curve_frames = 0, [], []
    found = read_resume_checkpoint(resume_path, key, device, lambda line: log(f"[{name}] {line}"))
    if found is not None:
        ckpt, path = found
        method.load_state_dict(ckpt["method"])
        set_rng_state(ckpt["rng"])
        start, log_rows, curve_frames = ckpt["iteration"], ckpt["log_rows"], ckpt["curve_frames"]
        log(f"[{name}] resumed from checkpoint at iteration {start} ({path})")
    tensorboard = TensorBoardLog.open(tensorboard_dir, method.env_steps if found else None,
                                      lambda line: log(f"[{name}] {line}"))

    def checkpoint(iteration: int) -> None:
        if tensorboard:
            tensorboard.flush()
        save_checkpoint({"spec_hash": key, "iteration": iteration, "method": method.state_dict(), "rng": rng_state(),
                         "log_rows": plain(log_rows), "curve_frames": plain(curve_frames)}, resume_path)

    log(f"[{name}] training on {device} for {spec['iterations']} iterations (spec {key})")
    last_checkpoint = time.monotonic()
    wall_start, steps_start = time.monotonic(), method.env_steps
    # signal handlers restored afterwards: train() is also a library call
    with _StopRequested() as stop, contextlib.closing(tensorboard) if tensorboard else contextlib.nullcontext():
        for iteration in range(start + 1, spec["iterations"] + 1):
            t0 = time.monotonic()
            method.progress = (iteration - 1) / spec["iterations"]
            metrics = method.train_iteration()
            elapsed = time.monotonic() - t0
            problem = non_finite(metrics, method.model)
            if problem:  # stop before anything is checkpointed: the last good checkpoint stays
                raise NonFiniteError(f"[{name}] {problem} at iteration {iteration}; training stopped, "
                                     f"last good checkpoint kept: {_last_checkpoint(resume_path)}")
            log_rows.append({"iteration": iteration, "env_steps": method.env_steps, "iteration_s": elapsed, **metrics})
            if tensorboard:
                tensorboard.train_row(log_rows[-1])
            if iteration % spec["eval_every"] == 0 or iteration == spec["iterations"]:
                with isolated_rng(spec["seed"] + CURVE_EVAL_SEED_OFFSET + iteration):
                    frame = evaluation_rows(method, tasks, spec["curve_splits"], spec.get("eval_tasks"),
                                            spec.get("protocol_episodes"))
                # mean over tasks of every metric column (return; TESP's distance_return too)
                frame = frame.drop(columns="task").groupby(["split", "stage"], as_index=False).mean()
                frame.insert(0, "env_steps", method.env_steps)
                frame.insert(0, "iteration", iteration)
                curve_frames.append(frame.to_dict("list"))
                if tensorboard:
                    tensorboard.evaluation(curve_frames[-1])
                final = frame[frame.stage == FINAL_STAGE].set_index("split")["return"].to_dict()
                log(f"[{name}] eval at iteration {iteration}: " + ", ".join(f"{s} {r:.3f}" for s, r in final.items()))
            rate = (method.env_steps - steps_start) / max(time.monotonic() - wall_start, 1e-9)
            eta = (spec["iterations"] - iteration) * (time.monotonic() - wall_start) / (iteration - start)
            recent = f" | return {metrics['return']:.3f}" if "return" in metrics else ""
            log(f"[{name}] it {iteration}/{spec['iterations']} | env steps {method.env_steps}{recent} "
                f"| {rate:,.0f} steps/s | ETA {_format_duration(eta)}")
            if stop.requested:
                checkpoint(iteration)
                log(f"[{name}] stop requested: checkpointed iteration {iteration}, exiting")
                sys.exit(143)
            if time.monotonic() - last_checkpoint >= checkpoint_every_s and iteration < spec["iterations"]:
                checkpoint(iteration)
                last_checkpoint = time.monotonic()

    save_csv(label_run(pd.DataFrame(log_rows), spec), out_dir / "train_log.csv")
    curves = pd.concat([pd.DataFrame(f) for f in curve_frames], ignore_index=True)
    save_csv(label_run(curves, spec), out_dir / "curve.csv")
    save_torch({"spec": spec, "model": method.model.state_dict(), "env_steps": method.env_steps}, out_dir / "model.pt")
    resume_path.unlink(missing_ok=True)
    previous_path(resume_path).unlink(missing_ok=True)
    log(f"[{name}] done: {method.env_steps} env steps in {_format_duration(time.monotonic() - wall_start)}")
