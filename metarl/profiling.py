"""Where a training iteration's time goes, measured from outside the methods.

``profile_run`` runs a real training slice through :func:`metarl.training.train` (the run spec
from config.yaml, its iteration count cut to N) with the method, its batched environments, its
optimiser and the driver's file writes wrapped by timers; afterwards it checkpoints once more
(``state_dict`` + ``torch.save`` into a temporary folder). Nothing in the methods is edited:
every wrapper is an instance attribute set on the built objects (or a module attribute of
``metarl.training``, or ``torch.Tensor.backward``) and removed again afterwards.

Timing is *exclusive*: a phase's time excludes the phases nested in it (an env step inside a
collection counts as env stepping, not as collection), so the phases of a run add up to its
total, the remainder being "other" (driver loop, logging, CSV writes, task-set file). Inside an
evaluation every nested phase is reported under ``evaluation: ...``. Wall and process CPU time
are both recorded (CPU time stays meaningful on a shared machine; with several threads it can
exceed wall time). On CUDA every timer boundary synchronises the device, so GPU work is charged
to the phase that launched it (this costs a little speed; the totals are upper bounds).

Which public methods are wrapped, per algorithm, is the ``PHASES`` table below; an attribute a
method does not have is skipped and listed in the report (its time then falls to the caller).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# category of each reported row, in report order
CATEGORIES = ("setup", "collection", "gradient", "evaluation", "checkpoint", "other")

# algo -> [(dotted attribute of the method, phase label, category)]. The driver-level phases
# (setup, iteration remainder, evaluation, checkpoint, env stepping, backward) are added for
# every algorithm by ``instrument``.
PHASES: dict[str, list[tuple[str, str, str]]] = {
    "pearl": [
        ("collect", "collection: posterior sampling, buffer writes", "collection"),
        ("rollout", "collection: policy inference", "collection"),
        ("adapt", "online adaptation: posterior over the gathered context", "other"),
        ("update", "gradient steps: batch sampling, forward", "gradient"),
        ("optimizer.step", "gradient steps: Adam", "gradient"),
    ],
    "tesp": [
        ("adapt", "adaptation bookkeeping (episode buffers, parameter copies)", "other"),
        ("rollout", "collection: policy inference (GRU encoder + MLP)", "collection"),
        ("fast_step", "fast updates: inner-loop policy gradients", "gradient"),
        ("meta_loss", "meta-update: PPO surrogate forward", "gradient"),
        ("optimizer.step", "meta-update: Adam", "gradient"),
    ],
    "vate": [
        ("rollout", "collection: policy inference, belief update", "collection"),
        ("elbo_loss", "PPO/ELBO update: ELBO forward", "gradient"),
        ("optimizer.step", "PPO/ELBO update: Adam", "gradient"),
    ],
}
# what the exclusive time of train_iteration is, once the phases above are taken out
ITERATION_REMAINDER = {
    "pearl": ("iteration remainder: task sampling, metric averaging", "other"),
    "tesp": ("meta-update: advantages, alpha clipping, metrics (one phase: not separable from outside)",
             "gradient"),
    "vate": ("PPO/ELBO update: values, GAE, PPO forward, grad clipping, metrics (one phase: not "
             "separable from outside)", "gradient"),
}
ENV_LABEL, BACKWARD_LABEL = "env stepping (batched env step/reset/set_tasks)", "backward (autograd)"
EVALUATION, CHECKPOINT = "evaluation", "checkpoint"


@dataclass
class _Frame:
    label: str
    category: str
    scope: bool            # nested phases are reported as "<label>: <their label>"
    own_label: str         # the row its exclusive time goes to
    wall: float
    cpu: float
    child_wall: float = 0.0
    child_cpu: float = 0.0


@dataclass
class PhaseTimer:
    """Exclusive wall/CPU time per phase label, from nested ``phase`` blocks."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    category: dict[str, str] = field(default_factory=dict)
    _stack: list[_Frame] = field(default_factory=list)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, label: str, category: str, scope: bool = False, own_label: str | None = None
              ) -> Iterator[None]:
        """Time a block as ``label``; a ``scope`` prefixes the labels of the phases nested in it
        with its own and reports its exclusive time as ``own_label``."""
        for frame in reversed(self._stack):  # the innermost scope names the row
            if frame.scope:
                label, category = f"{frame.label}: {label}", frame.category
                break
        self.sync()
        row = f"{label}: {own_label}" if scope and own_label else label
        frame = _Frame(label, category, scope, row, time.perf_counter(), time.process_time())
        self._stack.append(frame)
        try:
            yield
        finally:
            self.sync()
            wall, cpu = time.perf_counter() - frame.wall, time.process_time() - frame.cpu
            self._stack.pop()
            self.wall[frame.own_label] += wall - frame.child_wall
            self.cpu[frame.own_label] += cpu - frame.child_cpu
            self.calls[frame.own_label] += 1
            self.category[frame.own_label] = category
            if self._stack:
                self._stack[-1].child_wall += wall
                self._stack[-1].child_cpu += cpu

    def wrap(self, fn: Callable, label: str, category: str, scope: bool = False,
             own_label: str | None = None) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with self.phase(label, category, scope, own_label):
                return fn(*args, **kwargs)
        return timed


class Patches:
    """Attribute replacements undone in reverse order on ``restore``."""

    def __init__(self):
        self._undo: list[tuple[Any, str, Any, bool]] = []

    def set(self, obj: Any, name: str, value: Any) -> None:
        own = name in getattr(obj, "__dict__", {})
        self._undo.append((obj, name, obj.__dict__.get(name) if own else None, own))
        setattr(obj, name, value)

    def restore(self) -> None:
        for obj, name, old, own in reversed(self._undo):
            if own:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        self._undo.clear()


def _resolve(obj: Any, dotted: str) -> tuple[Any, str] | None:
    *path, name = dotted.split(".")
    for part in path:
        obj = getattr(obj, part, None)
    return (obj, name) if obj is not None and callable(getattr(obj, name, None)) else None


def instrument_env(env: Any, timer: PhaseTimer, patches: Patches) -> None:
    if getattr(env, "_profiled", False):
        return
    for name in ("step", "reset", "set_tasks", "set_goals"):
        if callable(getattr(env, name, None)):
            patches.set(env, name, timer.wrap(getattr(env, name), ENV_LABEL, "collection"))
    patches.set(env, "_profiled", True)


def instrument(method: Any, algo: str, timer: PhaseTimer, patches: Patches) -> list[str]:
    """Wrap ``method``'s phases (``PHASES[algo]``), its existing and future batched envs, its
    ``evaluate`` (a scope) and ``state_dict``. Returns the attributes that were not found."""
    from metarl.envs.base import BatchedEnv

    missing = []
    for dotted, label, category in PHASES[algo]:
        found = _resolve(method, dotted)
        if found is None:
            missing.append(dotted)
            continue
        obj, name = found
        patches.set(obj, name, timer.wrap(getattr(obj, name), label, category))
    label, category = ITERATION_REMAINDER[algo]
    patches.set(method, "train_iteration", timer.wrap(method.train_iteration, label, category))
    patches.set(method, "evaluate", timer.wrap(method.evaluate, EVALUATION, "evaluation", scope=True,
                                               own_label="result rows"))
    patches.set(method, "state_dict", timer.wrap(method.state_dict, "state_dict", "checkpoint"))

    # envs built in the constructor (attributes, or dicts of them) and every one built later
    for value in list(vars(method).values()):
        for env in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(env, BatchedEnv):
                instrument_env(env, timer, patches)
    family, make_batched = method.family, method.family.make_batched

    def make_instrumented(*args, **kwargs):
        env = make_batched(*args, **kwargs)
        instrument_env(env, timer, patches)
        return env
    patches.set(family, "make_batched", timer.wrap(make_instrumented, "env construction", "setup"))
    return missing


@contextlib.contextmanager
def timed_backward(timer: PhaseTimer) -> Iterator[None]:
    """Charge ``Tensor.backward`` to its own phase while the block runs."""
    original = torch.Tensor.backward
    torch.Tensor.backward = timer.wrap(original, BACKWARD_LABEL, "gradient")
    try:
        yield
    finally:
        torch.Tensor.backward = original


@dataclass
class Profile:
    spec: dict
    scale: str
    device: torch.device
    threads: int
    total_wall: float
    total_cpu: float
    rows: list[dict]                      # label, category, wall, cpu, calls (exclusive times)
    iteration_wall: list[float]           # per train_iteration call, inclusive
    evaluation_wall: float                # one curve evaluation (all curve splits), inclusive
    missing: list[str]
    iteration_cpu: list[float] = field(default_factory=list)
    evaluation_cpu: float = 0.0

    def category_totals(self) -> dict[str, tuple[float, float]]:
        out = {c: [0.0, 0.0] for c in CATEGORIES}
        for row in self.rows:
            out[row["category"]][0] += row["wall"]
            out[row["category"]][1] += row["cpu"]
        return {c: (w, p) for c, (w, p) in out.items()}


def profile_run(config: dict, experiment: str, family: str, method: str, iterations: int,
                device: str = "cpu", threads: int = 1, seed: int = 0, log: Callable[[str], None] = lambda s: None
                ) -> Profile:
    """Train ``iterations`` iterations of the config's run (at ``config["scale"]``) through
    ``metarl.training.train`` (which evaluates at its last iteration), then checkpoint once;
    return the exclusive time of every phase."""
    from metarl import training
    from metarl.config import run_spec
    from metarl.tasksets import write_taskset
    from metarl.utils.runtime import resolve_device

    if experiment not in config["experiments"]:
        raise KeyError(f"unknown experiment {experiment!r}; defined: {sorted(config['experiments'])}")
    spec = run_spec(config, experiment, family, method, seed)
    # one curve evaluation, after the last iteration (evaluations draw from their own random
    # streams, so their schedule does not change what is learned)
    spec.update(iterations=iterations, eval_every=iterations, device=device, threads=threads)
    torch_device = resolve_device(device)
    timer, patches = PhaseTimer(device=torch_device), Patches()
    built: dict[str, Any] = {}  # the method train() builds, and the phases it lacks
    iterations_timed: list[tuple[float, float]] = []
    evaluations_timed: list[tuple[float, float]] = []

    def build(*args, **kwargs):
        with timer.phase("build method (networks, optimiser, envs)", "setup"):
            m = original_build(*args, **kwargs)
        built.update(method=m, missing=instrument(m, spec["algo"], timer, patches))
        patches.set(m, "train_iteration", _inclusive(m.train_iteration, iterations_timed, timer))
        return m

    def save(obj, path):
        label = "periodic checkpoint" if Path(path) == resume else "final outputs (model.pt)"
        with timer.phase(f"torch.save: {label}", "checkpoint" if label.startswith("periodic") else "other"):
            original_save(obj, path)

    original_build, original_save = training.build_method, training.save_torch
    with tempfile.TemporaryDirectory(prefix="metarl-profile-") as tmp:
        tmp = Path(tmp)
        resume = tmp / "resume.pt"
        wall, cpu = time.perf_counter(), time.process_time()
        with timer.phase("task-set file", "setup"):
            write_taskset(family, config["taskset_seed"], tmp / "taskset.json")
        patches.set(training, "build_method", build)
        # one curve evaluation = evaluate() on every curve split
        patches.set(training, "evaluation_rows", _inclusive(training.evaluation_rows, evaluations_timed, timer))
        patches.set(training, "save_torch", save)
        try:
            with timed_backward(timer):
                training.train(spec, tmp / "taskset.json", tmp / "out", resume,
                               checkpoint_every_s=math.inf, log=log)
                trained = built["method"]
                # one checkpoint as the driver writes it (the run was too short for a periodic one)
                with timer.phase(CHECKPOINT, "checkpoint", scope=True, own_label="torch.save to a temp dir"):
                    torch.save({"method": trained.state_dict()}, tmp / "checkpoint.pt")
        finally:
            patches.restore()
        timer.sync()
        total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = [{"label": label, "category": timer.category[label], "wall": timer.wall[label],
             "cpu": timer.cpu[label], "calls": timer.calls[label]} for label in timer.wall]
    rows.append({"label": "other (driver loop, logging, CSV writes)", "category": "other",
                 "wall": total_wall - sum(r["wall"] for r in rows),
                 "cpu": total_cpu - sum(r["cpu"] for r in rows), "calls": 1})
    rows.sort(key=lambda r: (CATEGORIES.index(r["category"]), -r["wall"]))
    return Profile(spec=spec, scale=config["scale"], device=torch_device, threads=threads, total_wall=total_wall,
                   total_cpu=total_cpu, rows=rows, iteration_wall=[w for w, _ in iterations_timed],
                   evaluation_wall=evaluations_timed[0][0], missing=built["missing"],
                   iteration_cpu=[c for _, c in iterations_timed], evaluation_cpu=evaluations_timed[0][1])


def _inclusive(fn: Callable, sink: list[tuple[float, float]], timer: PhaseTimer) -> Callable:
    """Record each call's inclusive (wall, CPU) seconds (for per-iteration figures)."""
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        timer.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            timer.sync()
            sink.append((time.perf_counter() - wall, time.process_time() - cpu))
    return timed


def time_iterations(method: Any, algo: str, iterations: int, device: torch.device) -> dict[str, float]:
    """Per-iteration wall and CPU seconds of ``method.train_iteration`` and the share of each
    category (collection, gradient, other), from the same instrumentation as ``profile_run``."""
    timer, patches = PhaseTimer(device=device), Patches()
    instrument(method, algo, timer, patches)
    try:
        with timed_backward(timer), timer.phase("iterations", "other"):
            for _ in range(iterations):
                method.train_iteration()
    finally:
        patches.restore()
    wall, cpu = sum(timer.wall.values()), sum(timer.cpu.values())
    shares = defaultdict(float)
    for label, seconds in timer.wall.items():
        shares[timer.category[label]] += seconds / wall
    return {"wall_s": wall / iterations, "cpu_s": cpu / iterations,
            **{f"{c}_share": shares[c] for c in ("collection", "gradient", "other", "setup")}}


# ------------------------------------------------------------------------------ projection

def evaluations_in(iterations: int, eval_every: int) -> int:
    """Curve evaluations metarl.training runs: every ``eval_every`` iterations and at the end."""
    return iterations // eval_every + (iterations % eval_every != 0)


def projected_seconds(per_iteration: list[float], evaluation: float, iterations: int, eval_every: int) -> float:
    """Seconds of a full run: the first iteration as measured (PEARL's initial collection
    happens there), the others at the mean of the later measured iterations (the first one when
    only one was run), plus its curve evaluations at the measured evaluation time."""
    first, rest = per_iteration[0], per_iteration[1:] or per_iteration[:1]
    return first + (iterations - 1) * sum(rest) / len(rest) + evaluations_in(iterations, eval_every) * evaluation


def projected_run_s(profile: Profile, iterations: int, eval_every: int) -> float:
    """Wall seconds of a full run (see ``projected_seconds``)."""
    return projected_seconds(profile.iteration_wall, profile.evaluation_wall, iterations, eval_every)


def schedule_makespan(durations: list[float], workers: int) -> float:
    """Longest-first greedy assignment of independent jobs to ``workers``: the finishing time."""
    loads = [0.0] * workers
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads)


def profile_summary(p: Profile) -> dict:
    """What a projection needs, JSON-serialisable (``--json``)."""
    return {"experiment": p.spec["experiment"], "family": p.spec["family"], "method": p.spec["method"],
            "algo": p.spec["algo"], "scale": p.scale, "device": str(p.device), "threads": p.threads,
            "iteration_wall": p.iteration_wall, "evaluation_wall": p.evaluation_wall,
            "iteration_cpu": p.iteration_cpu, "evaluation_cpu": p.evaluation_cpu,
            "total_wall": p.total_wall, "total_cpu": p.total_cpu,
            "categories": {c: w for c, (w, _) in p.category_totals().items()}}


def dag_projection(config: dict, measured: list[dict], gpus: tuple[int, ...] = (1, 8)) -> str:
    """Markdown: projected wall time of every training run of the config's enabled experiments at
    its scale, from the measured slices (``profile_summary`` dicts). A run uses the slice of its
    own experiment, family and method if there is one, else its experiment's, else its
    algorithm's; only the iteration count and evaluation schedule change. Runs are independent
    jobs: one device runs them back to back, ``n`` devices as a longest-first greedy schedule.
    A run with no slice to take (e.g. E5's ``random``, an algorithm no slice measures) is listed as
    not projected and left out of the sums, which say so."""
    from metarl.config import run_specs

    def pick(spec):
        for match in (("experiment", "family", "method"), ("experiment",), ("algo",)):
            for m in measured:
                if all(m[k] == spec[k] for k in match):
                    return m, match
        return None, None

    per_experiment: dict[str, dict] = {}
    durations = []
    unmeasured: dict[str, int] = defaultdict(int)
    for spec in run_specs(config):
        m, match = pick(spec)
        if m is None:
            unmeasured[f"{spec['experiment']}/{spec['method']} (algorithm {spec['algo']})"] += 1
            continue
        seconds = projected_seconds(m["iteration_wall"], m["evaluation_wall"], spec["iterations"], spec["eval_every"])
        durations.append(seconds)
        e = per_experiment.setdefault(spec["experiment"], {"runs": 0, "exact": 0, "seconds": 0.0, "max": 0.0,
                                                          "from": set()})
        e["runs"] += 1
        e["exact"] += match == ("experiment", "family", "method")
        e["seconds"] += seconds
        e["max"] = max(e["max"], seconds)
        e["from"].add(f"{m['experiment']}/{m['family']}/{m['method']}")
    lines = ["| experiment | runs | measured slice used | runs with their own slice | longest run | sum over runs |",
             "|---|---|---|---|---|---|"]
    for name, e in per_experiment.items():
        lines.append(f"| {name} | {e['runs']} | {', '.join(sorted(e['from']))} | {e['exact']} | "
                     f"{format_duration(e['max'])} | {format_duration(e['seconds'])} |")
    lines.append("")
    if unmeasured:
        lines.append("Not projected, no slice of their experiment or algorithm was measured: "
                     + "; ".join(f"{n} run(s) of {what}" for what, n in sorted(unmeasured.items())) + ".")
        lines.append("")
    left_out = f", {sum(unmeasured.values())} runs not projected left out" if unmeasured else ""
    for n in gpus:
        lines.append(f"- whole DAG's training on {n} device(s), one run per device at a time: "
                     f"**{format_duration(schedule_makespan(durations, n))}** ({len(durations)} runs{left_out})")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ reporting

def machine_line(device: torch.device, threads: int | None) -> str:
    """Device, versions, torch threads (unless given per row), cores and load average."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    thread_part = f"{threads} torch thread(s), " if threads is not None else ""
    return (f"{device} ({name}), torch {torch.__version__}, Python {platform.python_version()}, {thread_part}"
            f"{os.cpu_count()} cores, load average {load}")


def format_duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if abs(seconds) < 1 else f"{seconds:.2f} s"


def format_profile(p: Profile) -> str:
    s = p.spec
    n = len(p.iteration_wall)
    title = (f"### {s['experiment']} / {s['family']} / {s['method']} ({s['algo']}), scale "
             f"{p.scale}, {n} iteration(s) + 1 evaluation + 1 checkpoint")
    iters = ", ".join(f"{_fmt(w)} ({_fmt(c)} CPU)" for w, c in zip(p.iteration_wall, p.iteration_cpu))
    lines = [title, "", f"Machine: {machine_line(p.device, p.threads)}.", "",
             f"Total {_fmt(p.total_wall)} wall, {_fmt(p.total_cpu)} process CPU. Iterations (inclusive wall): "
             f"{iters}; the evaluation ({s.get('eval_tasks') or 'all'} tasks of {', '.join(s['curve_splits'])}): "
             f"{_fmt(p.evaluation_wall)} ({_fmt(p.evaluation_cpu)} CPU).", "",
             "| category | wall | % of total | CPU |", "|---|---|---|---|"]
    for category, (wall, cpu) in p.category_totals().items():
        lines.append(f"| {category} | {_fmt(wall)} | {100 * wall / p.total_wall:.1f} % | {_fmt(cpu)} |")
    lines += ["", "| phase (exclusive time) | category | calls | wall | % | CPU |", "|---|---|---|---|---|---|"]
    for r in p.rows:
        lines.append(f"| {r['label']} | {r['category']} | {r['calls']} | {_fmt(r['wall'])} | "
                     f"{100 * r['wall'] / p.total_wall:.1f} % | {_fmt(r['cpu'])} |")
    if p.missing:
        lines += ["", f"Not instrumented (attribute not found; time falls to the caller): {', '.join(p.missing)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse

    import yaml

    from metarl.config import run_spec
    from metarl.utils.io import save_json, save_text

    parser = argparse.ArgumentParser(prog="metarl bench profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--family", required=True)
    parser.add_argument("--method", required=True, help="a method of config.yaml (e.g. pearl, tesp, vate)")
    parser.add_argument("--scale", default="quick", help="the config's scale (smoke, quick, paper)")
    parser.add_argument("--iterations", type=int, default=1, help="training iterations to profile")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parent.parent / "config.yaml")
    parser.add_argument("--project", action="store_true",
                        help="add the projected wall time of a full run at this scale")
    parser.add_argument("--verbose", action="store_true", help="show the training driver's log lines")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--json", type=Path, help="also write the figures a projection needs here")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")
    config = yaml.safe_load(args.config.read_text())
    config["scale"] = args.scale
    full = run_spec(config, args.experiment, args.family, args.method, args.seed)
    profile = profile_run(config, args.experiment, args.family, args.method, args.iterations, args.device,
                          args.threads, args.seed, log=print if args.verbose else (lambda line: None))
    text = format_profile(profile)
    if args.project:
        run_s = projected_run_s(profile, full["iterations"], full["eval_every"])
        cpu_s = projected_seconds(profile.iteration_cpu, profile.evaluation_cpu, full["iterations"], full["eval_every"])
        text += (f"\nProjected full run at scale {args.scale} ({full['iterations']} iterations, "
                 f"{evaluations_in(full['iterations'], full['eval_every'])} curve evaluations): "
                 f"{format_duration(run_s)} wall, {format_duration(cpu_s)} process CPU on this device.\n")
    print(text)
    if args.out:
        save_text(text, args.out)
    if args.json:
        save_json(profile_summary(profile), args.json)
