"""metarl.profiling: exclusive phase accounting, the instrumented training slice and the
projection arithmetic."""
import types

import pytest
import torch
import yaml
from conftest import REPO

from metarl import profiling, training
from metarl.cli import main as cli_main


class FakeClock:
    """Wall and CPU clocks that only move when told to."""

    def __init__(self):
        self.now = 0.0

    def advance(self, seconds):
        self.now += seconds

    def __call__(self):
        return self.now


def test_phase_timer_exclusive_times_by_hand(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(profiling, "time", types.SimpleNamespace(perf_counter=clock, process_time=clock))
    timer = profiling.PhaseTimer()
    with timer.phase("iteration", "other"):
        clock.advance(1.0)
        with timer.phase("collect", "collection"):
            clock.advance(2.0)
            with timer.phase("env", "collection"):
                clock.advance(4.0)
        with timer.phase("env", "collection"):
            clock.advance(8.0)
    with timer.phase("evaluation", "evaluation", scope=True, own_label="rows"):
        clock.advance(16.0)
        with timer.phase("env", "collection"):
            clock.advance(32.0)
    # exclusive: iteration 1; collect 2; env 4 + 8; evaluation's env 32 under the scope; its own 16
    assert dict(timer.wall) == {"iteration": 1.0, "collect": 2.0, "env": 12.0, "evaluation: env": 32.0,
                                "evaluation: rows": 16.0}
    assert timer.calls["env"] == 2 and timer.category["evaluation: env"] == "evaluation"
    assert dict(timer.cpu) == dict(timer.wall)


def test_projection_arithmetic_by_hand():
    assert profiling.evaluations_in(500, 10) == 50
    assert profiling.evaluations_in(20, 3) == 7  # 3, 6, ..., 18 and the last iteration
    # jobs 5, 4, 3, 3, 3 on two workers, longest first: [5, 3] and [4, 3, 3] -> 10
    assert profiling.schedule_makespan([3, 5, 3, 4, 3], 2) == 10
    assert profiling.schedule_makespan([3, 5, 3, 4, 3], 1) == 18
    p = profiling.Profile(spec={}, scale="paper", device=torch.device("cpu"), threads=1, total_wall=0.0,
                          total_cpu=0.0, rows=[], iteration_wall=[10.0, 2.0, 4.0], evaluation_wall=1.5,
                          missing=[])
    # first 10 s, then 99 iterations at the mean of 2 and 4 s, plus 10 evaluations of 1.5 s
    assert profiling.projected_run_s(p, iterations=100, eval_every=10) == pytest.approx(10 + 99 * 3 + 15)


def test_profile_run_phases_add_up_and_instrumentation_is_removed(config, device):
    config["scale"] = "smoke"
    config["experiments"]["E1"]["scales"]["smoke"]["eval_every"] = 1  # still one evaluation, at the end
    backward, build, save = torch.Tensor.backward, training.build_method, training.save_torch
    p = profiling.profile_run(config, "E1", "gridworld", "vate", iterations=2, device=str(device))
    labels = {r["label"] for r in p.rows}
    assert profiling.ENV_LABEL in labels and f"{profiling.EVALUATION}: {profiling.ENV_LABEL}" in labels
    assert profiling.BACKWARD_LABEL in labels and "checkpoint: state_dict" in labels
    assert p.missing == [] and len(p.iteration_wall) == 2 and p.evaluation_wall > 0
    assert next(r["calls"] for r in p.rows if r["label"] == f"{profiling.EVALUATION}: result rows") == 1
    for row in p.rows:
        assert row["wall"] >= 0 and row["cpu"] >= 0, row
    assert sum(r["wall"] for r in p.rows) == pytest.approx(p.total_wall, rel=1e-9)
    assert sum(r["cpu"] for r in p.rows) == pytest.approx(p.total_cpu, rel=1e-9)
    assert sum(w for w, _ in p.category_totals().values()) == pytest.approx(p.total_wall, rel=1e-9)
    # the inclusive iteration times cover the exclusive phases charged inside them
    inside = sum(r["wall"] for r in p.rows if r["category"] in ("collection", "gradient"))
    assert sum(p.iteration_wall) >= inside
    # the curve evaluation covers every evaluation phase (E1 has one curve split)
    assert p.evaluation_wall >= p.category_totals()["evaluation"][0]
    assert (torch.Tensor.backward, training.build_method, training.save_torch) == (backward, build, save)


def test_bench_profile_command_writes_markdown(tmp_path, device):
    out = tmp_path / "profile.md"
    cli_main(["bench", "profile", "--experiment", "E3", "--family", "point_robot", "--method", "pearl",
              "--scale", "smoke", "--iterations", "1", "--project", "--device", str(device), "--out", str(out)])
    text = out.read_text()
    assert "| phase (exclusive time) |" in text and "gradient steps: Adam" in text
    smoke = yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]["E3"]["scales"]["smoke"]
    assert f"Projected full run at scale smoke ({smoke['iterations']} iterations" in text


def paper_e1_only(config: dict, seeds: int, methods: list[str]) -> dict:
    """The config at paper scale with only E1 enabled: ``seeds`` x ``methods`` runs of 10
    iterations, evaluated every 5."""
    config["scale"] = "paper"
    for name, exp in config["experiments"].items():
        exp["enabled"] = name == "E1"
    e1 = config["experiments"]["E1"]
    e1["scales"]["paper"].update(seeds=seeds, iterations=10, eval_every=5)
    e1["methods"] = methods
    return config


def test_dag_projection_sums_runs_by_hand(config):
    paper_e1_only(config, seeds=2, methods=["vate", "rl2_10"])
    measured = [{"experiment": "E1", "family": "gridworld", "method": "vate", "algo": "vate",
                 "iteration_wall": [3.0, 1.0], "evaluation_wall": 2.0}]
    # each run: 3 + 9 * 1 + 2 evaluations * 2 = 16 s; 4 runs (2 methods x 2 seeds)
    text = profiling.dag_projection(config, measured, gpus=(1, 3))
    assert "| E1 | 4 | E1/gridworld/vate | 2 | 16.0 s | 1.1 min |" in text  # 64 s
    assert "on 1 device(s), one run per device at a time: **1.1 min**" in text
    assert "on 3 device(s), one run per device at a time: **32.0 s**" in text


def test_dag_projection_lists_runs_without_a_slice(config):
    paper_e1_only(config, seeds=3, methods=["vate", "random"])
    measured = [{"experiment": "E9", "family": "gridworld", "method": "vate", "algo": "vate",
                 "iteration_wall": [1.0], "evaluation_wall": 0.0}]
    # vate takes the slice by its algorithm: 10 x 1 s per run; random has none and is listed instead
    text = profiling.dag_projection(config, measured, gpus=(1,))
    assert "| E1 | 3 | E9/gridworld/vate | 0 | 10.0 s | 30.0 s |" in text
    assert "3 run(s) of E1/random (algorithm random)" in text
    assert "**30.0 s** (3 runs, 3 runs not projected left out)" in text

def test_one_curve_evaluation_covers_every_curve_split(config):
    config["scale"] = "smoke"
    config["experiments"]["E1"]["curve_splits"] = ["test", "train"]
    p = profiling.profile_run(config, "E1", "gridworld", "vate", iterations=1)
    evaluation = p.category_totals()["evaluation"][0]
    assert next(r["calls"] for r in p.rows if r["label"] == f"{profiling.EVALUATION}: result rows") == 2
    assert p.evaluation_wall >= evaluation
