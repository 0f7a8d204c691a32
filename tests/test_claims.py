"""The claims checker: its t distribution, Welch / paired / TOST statistics against closed forms
and hand-computed values, verdicts on synthetic per-seed tables, and malformed claims failing at
DAG build with the claim's name."""
import copy
import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import copy_workflow

from metarl import bench_dag
from metarl import config as metarl_config
from metarl.analysis import claims
from metarl.config import ConfigError


# ----------------------------------------------------------------------------- the t distribution

@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.7, 1.9, 12.0])
def test_t_cdf_matches_closed_forms(t):
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert claims.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert claims.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # very many degrees of freedom: the standard normal
    assert claims.t_cdf(t, 1e7) == pytest.approx(0.5 * (1 + math.erf(t / math.sqrt(2))), abs=1e-6)


def test_t_quantiles_match_tables():
    assert claims.t_ppf(0.95, 10) == pytest.approx(1.812461, abs=1e-6)
    assert claims.t_ppf(0.975, 5) == pytest.approx(2.570582, abs=1e-6)
    # near 0 the cdf is flat to within 1e-8 in t (df / (df + t^2) rounds to 1)
    assert claims.t_ppf(0.5, 3.7) == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------- tests

def seeds(*values):
    return pd.Series(values, index=range(len(values)), dtype=float)


def test_welch_against_hand_computation():
    # lhs 1..4: mean 2.5, var 5/3; rhs 2, 4, 6: mean 4, var 4.
    # se^2 = (5/3)/4 + 4/3 = 1.75; t = -1.5 / sqrt(1.75) = -1.13389;
    # df = 1.75^2 / ((5/12)^2 / 3 + (4/3)^2 / 2) = 3.23472 (scipy.stats.ttest_ind(equal_var=False)
    # gives the same t and df, and one-sided p = 0.833088)
    est = claims.contrast(seeds(1, 2, 3, 4), seeds(2, 4, 6))
    assert est.test == "Welch t"
    assert est.value == pytest.approx(-1.5)
    assert est.se == pytest.approx(math.sqrt(1.75))
    assert est.df == pytest.approx(1.75 ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))
    assert est.df == pytest.approx(3.234719, abs=1e-6)
    assert est.p_greater(0.0) == pytest.approx(0.8330881, abs=1e-6)


def test_paired_and_one_sample_against_closed_form():
    # differences 2, 3, 2: mean 7/3, sd 1/sqrt(3), se 1/3, t = 7 on 2 df -> p = 1/2 - 7 / (2 sqrt(51))
    est = claims.contrast(seeds(3, 5, 4), seeds(1, 2, 2), paired=True)
    assert (est.test, est.df) == ("paired t", 2)
    assert est.value / est.se == pytest.approx(7.0)
    assert est.p_greater(0.0) == pytest.approx(0.5 - 7 / (2 * math.sqrt(51)), abs=1e-12)
    # one sample 0.6, 0.7, 0.8 against 0.5: mean 0.7, se 0.1/sqrt(3), t = 2 sqrt(3) on 2 df
    est = claims.contrast(seeds(0.6, 0.7, 0.8), 0.5)
    t = 2 * math.sqrt(3)
    assert est.p_greater(0.0) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_tost_equivalence_against_hand_computation():
    # paired differences 0.1, -0.1, 0.3: mean 0.1, sd 0.2, se 0.2/sqrt(3); margin 0.5:
    # t_low = (0.1 + 0.5)/se = 3 sqrt(3), t_high = (0.1 - 0.5)/se = -2 sqrt(3); both on 2 df
    lhs, rhs = seeds(1.1, 0.9, 1.3), seeds(1.0, 1.0, 1.0)
    result = claims.decide("equivalent", lhs, rhs, paired=True, margin=0.5)
    f2 = lambda t: 0.5 + t / (2 * math.sqrt(2 + t * t))  # noqa: E731  the t cdf on 2 df
    expected = max(1 - f2(3 * math.sqrt(3)), f2(-2 * math.sqrt(3)))
    assert result["p"] == pytest.approx(expected, abs=1e-12)
    assert result["verdict"] == "reproduced"  # p = 0.0359 < 0.05
    # 90 % CI of the difference: 0.1 ± t(0.95; 2) se = 0.1 ± 2.919986 * 0.2 / sqrt(3)
    half = 2.919986 * 0.2 / math.sqrt(3)
    assert f"90% CI [{0.1 - half:+.3g}, {0.1 + half:+.3g}]" in result["statistic"]
    # the same data with margin 0.2: the point estimate (0.1) is inside, the upper test fails
    assert claims.decide("equivalent", lhs, rhs, paired=True, margin=0.2)["verdict"] == "inconclusive"
    # margin 0.05: the point estimate is outside the band
    assert claims.decide("equivalent", lhs, rhs, paired=True, margin=0.05)["verdict"] == "not reproduced"


def test_within_relative_tolerance_is_a_band_around_the_reference():
    # 10 % of 26: the band is [23.4, 28.6]; one-sample TOST against both ends
    tight = seeds(25.0, 25.5, 26.0, 25.2)
    assert claims.decide("within", tight, 26.0, paired=False, tolerance=0.1)["verdict"] == "reproduced"
    assert claims.decide("within", seeds(20.0, 21.0, 22.0), 26.0, paired=False, tolerance=0.1)["verdict"] == "not reproduced"
    # negative reference: 10 % of -50 is [-55, -45]
    assert claims.decide("within", seeds(-50.5, -49.0, -51.0), -50.0, paired=False, tolerance=0.1)["verdict"] == "reproduced"
    assert claims.decide("within", seeds(-40.0, -41.0, -39.0), -50.0, paired=False, tolerance=0.1)["verdict"] == "not reproduced"


def test_greater_verdicts():
    assert claims.decide("greater", seeds(10, 11, 12), seeds(5, 6, 7), False)["verdict"] == "reproduced"
    assert claims.decide("greater", seeds(5, 6, 7), seeds(10, 11, 12), False)["verdict"] == "not reproduced"
    assert claims.decide("greater", seeds(5, 9, 2), seeds(4, 8, 1.5), False)["verdict"] == "inconclusive"


def test_known_goal_return_by_hand():
    # goal (2, 0): one -0.1 step, then +1 for the remaining 14 steps; goal (4, 4): 7 steps of -0.1, then 8 x +1
    assert claims.known_goal_episode_return((2, 0)) == pytest.approx(13.9)
    assert claims.known_goal_episode_return((4, 4)) == pytest.approx(7.3)


# ----------------------------------------------------------------------------- synthetic results

def eval_rows(experiment, family, method, per_seed_task_returns, split="test", stage="final"):
    return [{"experiment": experiment, "family": family, "method": method, "seed": seed, "env_steps": 100,
             "split": split, "task": task, "stage": stage, "return": value}
            for seed, returns in enumerate(per_seed_task_returns) for task, value in enumerate(returns)]


@pytest.fixture
def synthetic(tmp_path):
    """E1 results with clear, opposite, noisy and two-seed comparisons; E4 sparse returns; E2
    configured but disabled; E3 enabled but never run."""
    rows = (eval_rows("E1", "gridworld", "vate", [[20, 22], [21, 21], [22, 24]])          # seed means 21, 21, 23
            + eval_rows("E1", "gridworld", "rl2_10", [[10, 12], [11, 11], [12, 10]])      # 11, 11, 11
            + eval_rows("E1", "gridworld", "rl2_64", [[30, 30], [31, 33], [29, 31]])      # 30, 32, 30
            + eval_rows("E1", "gridworld", "noisy", [[0, 40], [30, 10], [2, 2]])          # 20, 20, 2
            + eval_rows("E1", "gridworld", "two_seeds", [[5, 5], [6, 6]])
            + eval_rows("E1", "gridworld", "vate", [[10, 11], [10, 11], [11, 11]], stage="episode_2"))
    (tmp_path / "E1").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "E1" / "evals.csv", index=False)
    curves = [{"experiment": "E1", "family": "gridworld", "method": "vate", "seed": s, "iteration": it,
               "env_steps": it, "split": "test", "stage": "final", "return": value}
              for s, points in enumerate([[1, 5, 9], [2, 4, 8], [0, 6, 10]]) for it, value in zip([30, 10, 20], points)]
    pd.DataFrame(curves).to_csv(tmp_path / "E1" / "curves.csv", index=False)
    # sparse returns: per seed the fraction of tasks with return > 0 is 3/4, 2/4, 4/4
    sparse = eval_rows("E4", "dirichlet_point_robot", "pearl_dir24",
                       [[0.0, 1.3, 2.0, 0.9], [0.0, 0.0, 3.1, 0.2], [0.5, 0.5, 0.5, 0.5]])
    (tmp_path / "E4").mkdir()
    pd.DataFrame(sparse).to_csv(tmp_path / "E4" / "evals.csv", index=False)
    pd.DataFrame(columns=["experiment"]).to_csv(tmp_path / "E4" / "curves.csv", index=False)
    (tmp_path / "tasksets").mkdir()
    (tmp_path / "tasksets" / "gridworld.json").write_text(json.dumps(
        {"family": "gridworld", "splits": {"test": [{"goal": [2, 0]}, {"goal": [4, 4]}, {"goal": [0, 2]}]}}))
    methods = ["vate", "rl2_10", "rl2_64", "noisy", "two_seeds", "vate_detach"]
    plan = {
        "experiments": {
            "E1": {"enabled": True, "families": ["gridworld"], "methods": methods,
                   "runs": [["gridworld", m] for m in methods]},
            "E2": {"enabled": False, "families": ["reacher_2link"], "methods": ["tesp", "maml"],
                   "runs": [["reacher_2link", "tesp"], ["reacher_2link", "maml"]]},
            "E3": {"enabled": True, "families": ["point_robot"], "methods": ["pearl"], "runs": [["point_robot", "pearl"]]},
            "E4": {"enabled": True, "families": ["dirichlet_point_robot"], "methods": ["pearl_dir24"],
                   "runs": [["dirichlet_point_robot", "pearl_dir24"]]},
        },
        "claims": [
            {"id": "beats", "paper": "VATE", "experiment": "E1", "text": "vate beats", "metric": "return", "split": "test",
             "op": "greater", "lhs": "vate", "rhs": ["rl2_10", "rl2_64", "noisy", "two_seeds", "pearl"]},
            {"id": "episode2", "paper": "VATE", "experiment": "E1", "text": "near the known-goal return",
             "metric": "return", "split": "test", "stage": "episode_2", "op": "within", "tolerance": 0.1,
             "lhs": "vate", "rhs": {"reference": "known_goal"}},
            {"id": "improves", "paper": "VATE", "experiment": "E1", "text": "learns", "metric": "curve_last",
             "split": "test", "op": "greater", "lhs": "vate", "rhs": {"method": "vate", "metric": "curve_first"}},
            {"id": "detach", "paper": "VATE", "experiment": "E1", "text": "same", "metric": "return", "split": "test",
             "op": "equivalent", "margin": 1.0, "lhs": "vate_detach", "rhs": "vate"},
            {"id": "tesp", "paper": "TESP", "experiment": "E2", "text": "tesp beats", "metric": "return", "split": "D",
             "op": "greater", "lhs": "tesp", "rhs": "maml"},
            {"id": "pearl", "paper": "PEARL", "experiment": "E3", "text": "learns", "metric": "return", "split": "test",
             "op": "greater", "lhs": "pearl", "rhs": 0.0},
            {"id": "reach", "paper": "Structured latent", "experiment": "E4", "text": "reaches most goals",
             "metric": "goal_reached", "split": "test", "op": "greater", "lhs": "pearl_dir24", "rhs": 0.5},
        ],
    }
    return plan, tmp_path


def test_evaluator_verdicts_on_synthetic_tables(synthetic):
    plan, results = synthetic
    table = claims.evaluate_claims(plan, results).set_index("id")
    verdict = table["verdict"]
    assert verdict["beats[rl2_10]"] == "reproduced"         # 21.67 vs 11, tiny spread
    assert verdict["beats[rl2_64]"] == "not reproduced"     # 21.67 vs 30.67
    assert verdict["beats[noisy]"] == "inconclusive"        # 21.67 vs 14 ± 10.4
    assert verdict["beats[two_seeds]"] == "inconclusive"
    assert "two_seeds: 2 seed(s), need ≥ 3" in table.loc["beats[two_seeds]", "reason"]
    assert verdict["beats[pearl]"] == "missing"             # pearl is not an E1 method
    assert "not in experiments.E1.methods" in table.loc["beats[pearl]", "reason"]
    assert verdict["tesp"] == "missing" and "disabled" in table.loc["tesp", "reason"]
    assert verdict["pearl"] == "missing" and "E3/evals.csv not found" in table.loc["pearl", "reason"]
    assert verdict["detach"] == "missing" and "no evals rows for vate_detach" in table.loc["detach", "reason"]
    # per-seed values and spread of each side
    assert table.loc["beats[rl2_10]", "lhs_mean"] == pytest.approx(65 / 3)
    assert table.loc["beats[rl2_10]", "lhs_sd"] == pytest.approx(np.std([21, 21, 23], ddof=1))
    assert table.loc["beats[rl2_10]", "lhs_n"] == 3 and table.loc["beats[rl2_10]", "rhs_n"] == 3
    # known-goal return over the goals evaluated (tasks 0 and 1 of the three: 13.9 and 7.3)
    assert table.loc["episode2", "rhs_mean"] == pytest.approx((13.9 + 7.3) / 2)
    assert verdict["episode2"] == "reproduced"
    # curves: last point (iteration 30) minus first (iteration 10), paired per seed: 1-5, 2-4, 0-6
    assert table.loc["improves", "lhs_mean"] == pytest.approx(1.0)
    assert table.loc["improves", "rhs_mean"] == pytest.approx(5.0)
    assert table.loc["improves", "test"] == "paired t" and verdict["improves"] == "not reproduced"
    # goal reached = fraction of tasks with a nonzero sparse return: 0.75, 0.5, 1.0
    assert table.loc["reach", "lhs_mean"] == pytest.approx(0.75)
    assert table.loc["reach", "test"] == "one-sample t"
    # t = 0.25 / (0.25 / sqrt(3)) = sqrt(3) on 2 df: p = 1/2 - sqrt(3) / (2 sqrt(5)) = 0.113
    assert table.loc["reach", "p"] == pytest.approx(0.5 - math.sqrt(3) / (2 * math.sqrt(5)), abs=1e-12)
    assert verdict["reach"] == "inconclusive"


def test_written_tables_list_every_comparison(synthetic, tmp_path):
    plan, results = synthetic
    table = claims.evaluate_claims(plan, results)
    claims.write_claims(table, tmp_path / "out" / "claims")
    written = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert len(written) == 5 + 6  # five right sides of `beats`, six one-to-one claims: none dropped
    md = (tmp_path / "out" / "claims.md").read_text()
    html = (tmp_path / "out" / "claims.html").read_text()
    for claim_id in written["id"]:
        assert claim_id in md and claim_id in html
    assert "2 reproduced, 2 not reproduced, 3 inconclusive, 4 missing" in md


def test_claim_reads_the_named_column(tmp_path):
    """E2's claims read the TESP paper's distance-only return, not the return with control cost:
    the two columns rank the methods differently here."""
    rows = [{**row, "distance_return": distance + 0.1 * (row["seed"] - 1)}  # per-seed spread in both columns
            for method, returns, distance in [("tesp", [[-10.0], [-10.2], [-9.8]], -5.0),
                                              ("maml", [[-6.0], [-6.1], [-5.9]], -8.0)]
            for row in eval_rows("E2", "reacher_2link", method, returns, split="D")]
    (tmp_path / "E2").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "E2" / "evals.csv", index=False)
    plan = {"experiments": {"E2": {"enabled": True, "families": ["reacher_2link"], "methods": ["tesp", "maml"],
                                   "runs": [["reacher_2link", "tesp"], ["reacher_2link", "maml"]]}},
            "claims": [{"id": c, "paper": "TESP", "experiment": "E2", "text": "tesp beats", "metric": "return",
                        "split": "D", "op": "greater", "lhs": "tesp", "rhs": "maml", **extra}
                       for c, extra in [("with_control_cost", {}), ("paper_metric", {"column": "distance_return"})]]}
    table = claims.evaluate_claims(plan, tmp_path).set_index("id")
    assert table.loc["with_control_cost", "lhs_mean"] == pytest.approx(-10.0)
    assert table.loc["with_control_cost", "verdict"] == "not reproduced"
    assert table.loc["paper_metric", "lhs_mean"] == pytest.approx(-5.0)
    assert table.loc["paper_metric", "rhs_mean"] == pytest.approx(-8.0)
    assert table.loc["paper_metric", "verdict"] == "reproduced"
    assert table.loc["paper_metric", "metric"] == "return (distance_return)"


def test_distance_return_only_where_it_is_recorded(repo_config):
    claim = next(c for c in repo_config["claims"] if c["id"] == "e2_tesp_beats_baselines_on_d")
    assert claim["column"] == "distance_return"  # the repository's E2 claims use the paper's metric
    with pytest.raises(ConfigError, match="e1_vate_beats_rl2.*column 'distance_return' is recorded by tesp"):
        metarl_config.validate(bad_claim(repo_config, column="distance_return"))


# ----------------------------------------------------------------------------- malformed claims

def bad_claim(config, **change):
    config = copy.deepcopy(config)
    claim = next(c for c in config["claims"] if c["id"] == "e1_vate_beats_rl2")
    claim.update(change)
    return config


@pytest.mark.parametrize("change, expected", [
    ({"rhs": ["rl2_10", "rl2_46"]}, "unknown method 'rl2_46'"),
    ({"experiment": "E7"}, "unknown experiment 'E7'"),
    ({"metric": "retrun"}, "'retrun' is not one of"),
    ({"stage": "episode_4"}, "stage 'episode_4' is not reported by vate"),
    ({"split": "D"}, "split 'D' is not in experiments.E1.eval_splits"),
    ({"family": "ant_goal"}, "family 'ant_goal' is not among E1's families"),
    ({"op": "within"}, "needs a relative 'tolerance'"),
    ({"rhs": {"reference": "bayes_optimal"}, "stage": "episode_1"}, "stage final"),
])
def test_malformed_claim_names_itself(repo_config, change, expected):
    with pytest.raises(ConfigError) as err:
        metarl_config.validate(bad_claim(repo_config, **change))
    assert "e1_vate_beats_rl2" in str(err.value) and expected in str(err.value)


def test_goal_reached_needs_a_sparse_family(repo_config):
    config = bad_claim(repo_config, metric="goal_reached")
    with pytest.raises(ConfigError, match="e1_vate_beats_rl2.*'goal_reached' needs a sparse-reward family"):
        metarl_config.validate(config)


@pytest.mark.parametrize("experiment, family, method", [
    ("E1", "gridworld", "vate"), ("E4", "dirichlet_point_robot", "pearl_dir24"),
    ("E2", "reacher_2link", "tesp"), ("E2", "reacher_2link", "maml")])
def test_stages_checked_are_those_evaluate_writes(tmp_path, repo_config, experiment, family, method):
    """The DAG-build stage check mirrors each algorithm's evaluate(): compare with a real evaluation."""
    import torch

    from metarl.tasksets import read_taskset, write_taskset
    from metarl.training import build_method

    config = copy.deepcopy(repo_config)
    config["scale"] = "smoke"
    spec = metarl_config.run_spec(config, experiment, family, method, 0)
    write_taskset(family, 1, tmp_path / "tasks.json")
    rows = build_method(spec, tmp_path / "tasks.json", torch.device("cpu")).evaluate(
        read_taskset(tmp_path / "tasks.json")[spec["curve_splits"][0]][:2])
    assert set(rows["stage"]) == set(claims.stages_of(spec))


def test_repo_claims_cover_every_experiment(repo_config):
    assert {c["experiment"] for c in repo_config["claims"]} == {"E1", "E2", "E3", "E4", "E5"}
    assert len({c["id"] for c in repo_config["claims"]}) == len(repo_config["claims"])


def test_bad_claim_fails_the_dag_build(tmp_path, repo_config):
    workdir = copy_workflow(tmp_path, repo_config)
    (workdir / "bad.yaml").write_text(yaml.safe_dump(bad_claim(repo_config, rhs=["rl2_10", "rl2_46"]), sort_keys=False))
    out = subprocess.run(["snakemake", "-n", "--cores", "1", "--configfile", "bad.yaml"], cwd=workdir,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "claim 'e1_vate_beats_rl2'" in out.stdout + out.stderr
    assert "unknown method 'rl2_46'" in out.stdout + out.stderr


def test_smoke_dag_checks_the_claims(tmp_path, repo_config):
    config = copy.deepcopy(repo_config)
    config["scale"] = "smoke"
    out = subprocess.run(["snakemake", "-n", "--cores", "2", "results/claims.md"],
                         cwd=copy_workflow(tmp_path, config), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "rule claims:" in out.stdout
    # it waits for every experiment's aggregated results
    for experiment in ("E1", "E2", "E3", "E4", "E5"):
        assert f"results/{experiment}/evals.csv" in out.stdout


# ----------------------------------------------------------------------------- cost summary

def test_bench_dag_sums_benchmark_files(tmp_path, capsys):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {"train/E1/gridworld/vate/seed0.tsv": "1800.0\t0:30:00\t500.5\t1\t1\t1\t0\t0\t99\t1790.0\n",
             "train/E1/gridworld/vate/seed1.tsv": "3600.0\t1:00:00\t700.0\t1\t1\t1\t0\t0\t99\t3500.0\n",
             "evaluate/E1/gridworld/vate/seed0.tsv": "0.4\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n"}
    for name, row in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(header + row)
    jobs = bench_dag.read_benchmarks(tmp_path)
    table = bench_dag.per_rule(jobs)
    assert table.loc["total", "jobs"] == 3
    assert table.loc["total", "wall_h"] == pytest.approx((1800 + 3600 + 0.4) / 3600, abs=1e-3)
    assert table.loc["total", "cpu_h"] == pytest.approx((1790 + 3500) / 3600, abs=1e-3)
    assert table.loc["train", "longest_min"] == pytest.approx(60.0)
    assert table.loc["total", "max_rss_mb"] == pytest.approx(700.0)
    bench_dag.main(["--dir", str(tmp_path), "--top", "1"])
    printed = capsys.readouterr().out
    assert "train/E1/gridworld/vate/seed1" in printed and "seed0" not in printed.split("Longest")[1].split("total job")[0]
    assert "longest job 60.0 min (target ≤ 30 min: MISSED)" in printed


def _jobs(experiment: str, rng, n: int):
    """``n`` train and ``n`` evaluate jobs of one experiment as `read_benchmarks` returns them,
    with random times; one evaluate job too short to sample (NaN CPU time and memory)."""
    import numpy as np
    import pandas as pd

    rows = [{"rule": rule, "job": f"{rule}/{experiment}/fam/m/seed{k}", "s": float(rng.uniform(1, 2400)),
             "cpu_time": float(rng.uniform(1, 2000)), "max_rss": float(rng.uniform(50, 2000))}
            for rule in ("train", "evaluate") for k in range(n)]
    rows[-1].update(cpu_time=np.nan, max_rss=np.nan)
    return pd.DataFrame(rows)


def test_bench_dag_combines_the_reports_of_parts_into_the_whole_dags(tmp_path, capsys):
    """Experiments run apart each leave a report; added up, they must say what one report over all
    their jobs says (the reference), up to the parts' printed rounding."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    parts = {"E1": _jobs("E1", rng, 14), "E2": _jobs("E2", rng, 9), "E3": _jobs("E3", rng, 3)}
    parts["E1"].loc[0, "s"] = 4 * 3600.0     # one long job, so the whole misses both targets
    parts["E2"]["resumed_from"] = [7.0] + [np.nan] * (len(parts["E2"]) - 1)
    for part, jobs in parts.items():
        (tmp_path / part).mkdir()
        (tmp_path / part / "cost.txt").write_text(bench_dag.report(jobs, 10, None, None) + "\n")
    everything = pd.concat(parts.values(), ignore_index=True)
    bench_dag.main(["--combine", *(str(tmp_path / p / "cost.txt") for p in parts), "--top", "10"])
    combined = capsys.readouterr().out
    expected = bench_dag.report(everything, 10, 4.0, 30.0)
    rules, longest, _ = bench_dag.parse_report(combined)
    want_rules, want_longest, _ = bench_dag.parse_report(expected)
    pd.testing.assert_frame_equal(rules, want_rules, atol=2e-3, rtol=0)
    pd.testing.assert_frame_equal(longest.reset_index(drop=True), want_longest.reset_index(drop=True))
    assert longest["job"].iloc[0] == "train/E1/fam/m/seed0" and len(longest) == 10
    assert {job.split("/")[1] for job in longest["job"]} >= {"E1", "E2"}   # the top 10 spans the parts
    assert "(target ≤ 4 h: MISSED)" in combined and "(target ≤ 30 min: MISSED)" in combined
    totals = [next(line for line in text.splitlines() if line.startswith("total job time")) for text in (expected, combined)]
    assert totals[0].split(";")[1] == totals[1].split(";")[1]   # the longest job, judged alike
    assert "\nE2: 1 job(s) resumed from a checkpoint, timed only after it (their earlier time is not counted): " \
           "train/E2/fam/m/seed0 (from iteration 7)" in combined
    per_part = combined.split("\n\n")[0].splitlines()[2:]
    assert [line.split()[:2] for line in per_part] == [["E1", "28"], ["E2", "18"], ["E3", "6"]]


def test_bench_dag_combine_names_a_file_that_is_no_report(tmp_path):
    (tmp_path / "E1").mkdir()
    (tmp_path / "E1" / "cost.txt").write_text("total job time 1 h\n")
    with pytest.raises(SystemExit, match=r"E1/cost.txt: not a `metarl bench dag` report"):
        bench_dag.main(["--combine", str(tmp_path / "E1" / "cost.txt")])
    with pytest.raises(SystemExit, match=r"E2/cost.txt not found"):
        bench_dag.main(["--combine", str(tmp_path / "E2" / "cost.txt")])


def test_bench_dag_counts_only_the_runs_given(tmp_path, capsys):
    """The pipeline's cost rule names the DAG's runs: benchmark files of runs no longer in the config
    are left out, and a run without one is named rather than silently counted as free."""
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for job, seconds in {"train/E1/gridworld/vate/seed0": 600.0, "evaluate/E1/gridworld/vate/seed0": 6.0,
                         "train/E1/gridworld/vate/seed7": 3600.0}.items():   # seed 7: an old config's run
        (tmp_path / f"{job}.tsv").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{job}.tsv").write_text(header + f"{seconds}\t0\t100\t1\t1\t1\t0\t0\t99\t{seconds}\n")
    runs = ["results/E1/runs/gridworld/vate/seed0/eval.csv", "results/E1/runs/gridworld/vate/seed1/eval.csv"]
    bench_dag.main(["--dir", str(tmp_path), "--runs", *runs, "--no-targets"])
    printed = capsys.readouterr().out
    assert "total job time 0.17 h; longest job 10.0 min (no target judged: the targets are the quick scale's)" in printed
    assert "seed7" not in printed
    assert "1 of the 2 runs have no benchmark file (not counted): E1/gridworld/vate/seed1" in printed
    with pytest.raises(SystemExit, match="results/E1/gridworld/eval.csv is not a run's folder"):
        bench_dag.main(["--dir", str(tmp_path), "--runs", "results/E1/gridworld/eval.csv"])
    with pytest.raises(SystemExit, match="no benchmark file under .* belongs to the 1 runs given"):
        bench_dag.main(["--dir", str(tmp_path), "--runs", "results/E2/runs/wheeled/tesp/seed0"])


def test_bench_dag_names_jobs_resumed_from_a_checkpoint(tmp_path, capsys):
    """A resumed job's benchmark file times only its last attempt: the report must say so."""
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    row = "60.0\t0:01:00\t100\t1\t1\t1\t0\t0\t99\t59.0\n"
    logs = {"train/E3/ant_goal/pearl/seed2": "[E3/ant_goal/pearl/seed2] resumed from checkpoint at iteration 11 "
                                              "(results/.resume/E3/ant_goal/pearl/seed2.pt)\n[...] it 12/20\n",
            "train/E3/ant_goal/pearl/seed0": "[E3/ant_goal/pearl/seed0] training on cpu for 20 iterations\n"}
    for job, text in logs.items():
        for root, suffix, content in (("benchmarks", ".tsv", header + row), ("logs", ".log", text)):
            path = tmp_path / root / f"{job}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    (tmp_path / "benchmarks/evaluate/E3/ant_goal/pearl").mkdir(parents=True)
    (tmp_path / "benchmarks/evaluate/E3/ant_goal/pearl/seed0.tsv").write_text(header + row)   # no log at all
    jobs = bench_dag.read_benchmarks(tmp_path / "benchmarks")
    resumed = bench_dag.resumed_from(jobs, tmp_path / "logs").set_axis(jobs["job"])
    assert resumed["train/E3/ant_goal/pearl/seed2"] == 11
    assert resumed.drop("train/E3/ant_goal/pearl/seed2").isna().all()
    bench_dag.main(["--dir", str(tmp_path / "benchmarks")])   # logs/ beside it by default
    printed = capsys.readouterr().out
    assert "1 job(s) resumed from a checkpoint" in printed
    assert "train/E3/ant_goal/pearl/seed2 (from iteration 11)" in printed and "seed0 (from" not in printed
    bench_dag.main(["--dir", str(tmp_path / "benchmarks"), "--logs", str(tmp_path / "elsewhere")])
    assert "resumed" not in capsys.readouterr().out
