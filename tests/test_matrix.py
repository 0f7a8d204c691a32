"""E5's matrix: cell values, normalised scores and reasons against hand computation; the
`curve_at_budget` claim metric; the figures are written."""
import copy
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from metarl.analysis import claims, matrix

STYLE = {"style": "whitegrid", "context": "paper", "palette": "colorblind", "spread": "sd", "dpi": 60}


def eval_frame(cells):
    """cells: {(family, split, method): [per-seed lists of per-task final returns]}; every run
    also reports consumed_0 = final - 1 and consumed_1 = final."""
    rows = []
    for (family, split, method), per_seed in cells.items():
        for seed, tasks in enumerate(per_seed):
            for task, value in enumerate(tasks):
                for stage, shift in (("consumed_0", -1.0), ("consumed_1", 0.0), ("final", 0.0)):
                    rows.append({"env_steps": 100, "experiment": "E5", "family": family, "method": method,
                                 "seed": seed, "split": split, "task": task, "stage": stage, "return": value + shift})
    return pd.DataFrame(rows)


PLAN = {"families": {"grid": ["test"], "reach": ["D", "D_prime"]}, "methods": ["random", "a", "b"],
        "runs": [["grid", "random"], ["grid", "a"], ["grid", "b"], ["reach", "random"], ["reach", "a"]],
        "not_run": {"b": {"reach": "no such action space"}}, "baseline": "random",
        "episodes": {"grid": 2, "reach": 2}}


@pytest.fixture
def evals():
    return eval_frame({
        ("grid", "test", "random"): [[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]],   # seed means 1, 1, 1
        ("grid", "test", "a"): [[5.0, 5.0], [7.0, 7.0]],                    # 5, 7 -> mean 6, sd sqrt 2
        ("grid", "test", "b"): [[3.0, 3.0]],                                # 3
        ("reach", "D", "random"): [[-10.0]],
        ("reach", "D", "a"): [[-4.0], [-6.0]],                              # -5
        ("reach", "D_prime", "random"): [[-10.0]],
        # reach D_prime of "a" has no results
    })


def test_matrix_cells_scores_and_reasons(evals):
    m = matrix.build_matrix(evals, PLAN).set_index(["family", "split", "method"])
    assert m.loc[("grid", "test", "a"), "mean"] == pytest.approx(6.0)
    assert m.loc[("grid", "test", "a"), "sd"] == pytest.approx(math.sqrt(2.0))
    assert m.loc[("grid", "test", "a"), "seeds"] == 2
    # normalised: (x - random) / (best - random) with random 1 and best 6
    assert m.loc[("grid", "test", "random"), "score"] == pytest.approx(0.0)
    assert m.loc[("grid", "test", "a"), "score"] == pytest.approx(1.0)
    assert m.loc[("grid", "test", "b"), "score"] == pytest.approx((3.0 - 1.0) / (6.0 - 1.0))
    assert np.isnan(m.loc[("grid", "test", "b"), "sd"])  # one seed: no spread
    # reach D: random -10, a -5 -> a is the best
    assert m.loc[("reach", "D", "a"), "score"] == pytest.approx(1.0)
    assert m.loc[("reach", "D", "b"), "status"] == "not run: no such action space"
    assert m.loc[("reach", "D_prime", "a"), "status"] == "missing: no evaluation results"
    # D_prime has only the baseline measured: no score defined
    assert m.loc[("reach", "D_prime", "random"), "status"] == "ok"
    assert np.isnan(m.loc[("reach", "D_prime", "random"), "score"])
    assert len(m) == 3 * 3  # every (family, split) x method, none dropped


def test_unconfigured_cell_says_so(evals):
    plan = copy.deepcopy(PLAN)
    plan["not_run"] = {}
    m = matrix.build_matrix(evals, plan).set_index(["family", "split", "method"])
    assert m.loc[("reach", "D", "b"), "status"] == "not run: not configured for this family"


def test_written_matrix_and_figures(evals, tmp_path):
    table = matrix.build_matrix(evals, PLAN)
    matrix.write_matrix(table, str(tmp_path / "matrix"), "E5", PLAN["episodes"])
    md = (tmp_path / "matrix.md").read_text()
    assert "6 ± 1.41 [1.00] (n=2)" in md and "not run: no such action space" in md and "grid K = 1" in md
    assert pd.read_csv(tmp_path / "matrix.csv").shape[0] == 9
    matrix.plot_heatmap(table, tmp_path / "heatmap.png", STYLE, "scores")
    matrix.plot_adaptation(evals, tmp_path / "adaptation.png", STYLE, "curves")
    for name in ("heatmap.png", "adaptation.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 100 and image.size[1] > 100


# ----------------------------------------------------------------------------- curve_at_budget


def curve_rows(method, per_seed_points):
    return [{"experiment": "E5", "family": "f", "method": method, "seed": seed, "split": "test", "stage": "final",
             "iteration": i + 1, "env_steps": steps, "return": value}
            for seed, points in enumerate(per_seed_points) for i, (steps, value) in enumerate(points)]


def test_curve_at_budget_reads_each_run_at_the_reference_env_steps(tmp_path):
    (tmp_path / "E5").mkdir()
    curves = pd.DataFrame(
        curve_rows("pearl", [[(500, 1.0), (1050, 2.0)], [(600, 1.5), (1150, 3.0)]])   # budget (1050 + 1150) / 2 = 1100
        + curve_rows("maml", [[(400, -1.0), (1100, -0.5), (5000, 9.0)],                  # 1100 <= budget: -0.5
                              [(2000, 4.0), (9000, 8.0)]]))                              # none within: first, 4.0
    curves.to_csv(tmp_path / "E5" / "curves.csv", index=False)
    store = claims.Results(tmp_path)
    side = {"method": "maml", "metric": "curve_at_budget", "budget_of": "pearl", "split": "test", "stage": "final",
            "column": "return"}
    assert store.budget("E5", "f", side) == pytest.approx(1100.0)
    values = store.per_seed("E5", "f", side)
    assert values.to_dict() == {0: -0.5, 1: 4.0}
    own = store.per_seed("E5", "f", {**side, "method": "pearl"})
    assert own.to_dict() == {0: 2.0, 1: 1.5}  # seed 1's 1150-step point is past the mean budget


def test_repo_claims_include_the_env_step_claim(repo_config):
    ids = {c["id"]: c for c in repo_config["claims"]}
    claim = ids["e5_pearl_fewer_env_steps"]
    assert claim["metric"] == "curve_at_budget" and claim["budget_of"] == "pearl"
    assert set(claim["family"]) == {"cheetah_vel", "sparse_point_robot"}


def test_curve_at_budget_refuses_runs_shorter_than_the_budget(tmp_path):
    (tmp_path / "E5").mkdir()
    curves = pd.DataFrame(curve_rows("pearl", [[(500, 1.0), (1000, 2.0)]])
                          + curve_rows("rl2", [[(300, 0.5), (600, 0.7)], [(300, 0.1), (990, 0.2)]]))
    curves.to_csv(tmp_path / "E5" / "curves.csv", index=False)
    side = {"method": "rl2", "metric": "curve_at_budget", "budget_of": "pearl", "split": "test", "stage": "final",
            "column": "return"}
    with pytest.raises(claims.Missing, match="end at 600 env steps, before the budget of 1,000"):
        claims.Results(tmp_path).per_seed("E5", "f", side)
