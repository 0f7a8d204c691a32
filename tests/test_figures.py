"""The figure commands the DAG calls: they draw what was asked (subsets, one row per model) and
refuse inputs they cannot draw, naming them."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from metarl import cli
from metarl import config as metarl_config
from metarl.tasksets import write_taskset
from metarl.training import train

STYLE = '{"style": "whitegrid", "context": "paper", "palette": "colorblind", "spread": "sd", "dpi": 40}'


def synthetic_curves() -> pd.DataFrame:
    rows = []
    for family in ("reacher_2link", "wheeled"):
        for method in ("tesp", "tesp_v1", "maml"):
            for seed in (0, 1):
                for iteration in (1, 2):
                    rows.append({"family": family, "method": method, "seed": seed, "iteration": iteration,
                                 "env_steps": 100 * iteration, "split": "D", "stage": "final",
                                 "return": float(iteration + seed)})
    return pd.DataFrame(rows)


def test_curves_subset_draws_one_panel_per_kept_family(tmp_path):
    data = tmp_path / "curves.csv"
    synthetic_curves().to_csv(data, index=False)
    whole, subset = tmp_path / "whole.png", tmp_path / "subset.png"
    cli.main(["plot", "curves", "--data", str(data), "--style", STYLE, "--out", str(whole)])
    cli.main(["plot", "curves", "--data", str(data), "--style", STYLE, "--families", "reacher_2link",
              "--methods", "tesp", "tesp_v1", "--out", str(subset)])
    # two family columns against one: the subset figure is clearly narrower
    assert imread(subset).shape[1] < 0.7 * imread(whole).shape[1]


def test_curves_of_many_families_wrap_into_rows_of_four(tmp_path):
    """E3 has eight families on one split: two rows of four, not one strip of eight; the reference
    line (looked up per family) is still drawn."""
    curves = synthetic_curves()
    curves = pd.concat([curves.assign(family=f"{family}_{k}") for k in range(4) for family in ("a", "b")])
    data, reference = tmp_path / "curves.csv", tmp_path / "reference.json"
    curves.to_csv(data, index=False)
    reference.write_text('{"label": "oracle", "values": {"a_0": 2.5}}')
    png = tmp_path / "wrapped.png"
    cli.main(["plot", "curves", "--data", str(data), "--style", STYLE, "--reference", str(reference),
              "--out", str(png)])
    height, width = imread(png).shape[:2]
    assert 2 < width / height < 4  # 4 x 2 panels of aspect 1.3 plus legend; one row of 8 is ~11


def test_curves_of_families_on_different_splits_leave_no_empty_panels(tmp_path):
    """E5: each family has one curve split, not the same one (test, or D for the reaching
    families): one panel per family, not a split x family grid with empty panels."""
    curves = synthetic_curves()
    curves.loc[curves.family == "wheeled", "split"] = "test"
    data, png = tmp_path / "curves.csv", tmp_path / "curves.png"
    curves.to_csv(data, index=False)
    cli.main(["plot", "curves", "--data", str(data), "--style", STYLE, "--out", str(png)])
    height, width = imread(png).shape[:2]
    assert width / height > 2.2  # one row of 2 panels of aspect 1.3 plus legend; a 2 x 2 grid is ~1.5


def test_curves_subset_names_a_missing_method(tmp_path):
    data = tmp_path / "curves.csv"
    synthetic_curves().to_csv(data, index=False)
    with pytest.raises(ValueError, match=r"method \['tesp_v9'\] not in the curves"):
        cli.main(["plot", "curves", "--data", str(data), "--style", STYLE, "--methods", "tesp", "tesp_v9",
                  "--out", str(tmp_path / "x.png")])


@pytest.fixture(scope="module")
def e4_models(tmp_path_factory, repo_config):
    """Two smoke-scale E4 models (Gaussian and Dirichlet latents) and their task set."""
    root = tmp_path_factory.mktemp("e4")
    config = {**repo_config, "scale": "smoke"}
    taskset = root / "dirichlet_point_robot.json"
    write_taskset("dirichlet_point_robot", 0, taskset)
    models = []
    for method in ("pearl_gau5", "pearl_dir24"):
        spec = metarl_config.run_spec(config, "E4", "dirichlet_point_robot", method, 0)
        spec["iterations"] = 1
        train(spec, taskset, root / method, root / f"{method}.resume", log=lambda line: None)
        models.append(str(root / method / "model.pt"))
    return models, str(taskset)


@pytest.mark.parametrize("kind", ["prior-samples", "adaptation"])
def test_e4_figures_have_one_row_per_model(tmp_path, e4_models, kind):
    models, taskset = e4_models
    heights = []
    for chosen in (models[:1], models):
        out = tmp_path / f"{kind}_{len(chosen)}.png"
        cli.main(["figure", kind, "--models", *chosen, "--taskset", taskset, "--style", STYLE, "--out", str(out)])
        image = imread(out)
        assert image.ndim == 3 and np.ptp(image[..., :3]) > 0  # drawn, not blank
        heights.append(image.shape[0])
    if kind == "adaptation":  # rows are models (prior samples put models side by side)
        assert heights[1] > 1.5 * heights[0]


def test_belief_figure_takes_exactly_one_model(tmp_path):
    with pytest.raises(SystemExit, match="draws one model"):
        cli.main(["figure", "belief", "--models", "a.pt", "b.pt", "--taskset", "t.json", "--style", STYLE,
                  "--out", str(tmp_path / "x.png")])


def test_stage_panels_each_show_their_own_family_stages_in_order(tmp_path):
    """E3 mixes families with 3 adaptation trajectories and one with 20: each panel's x axis has
    its own family's stages in numeric order (traj_2 before traj_10), each method's points are the
    means over seeds, and the CLI writes the figure."""
    import json

    from metarl.analysis.plots import stages_grid

    rows = []
    for family, count in (("cheetah_vel", 3), ("sparse_point_robot", 12)):
        for method, offset in (("pearl", 0.0), ("pearl_ctx", 100.0)):
            for seed in (0, 1):
                for k in range(1, count + 1):
                    for stage in (f"traj_{k}",) + (("final",) if k == count else ()):
                        rows.append({"family": family, "split": "test", "method": method, "seed": seed, "task": 0,
                                     "stage": stage, "return": offset + 10 * k + seed})
    evals = pd.DataFrame(rows)
    grid = stages_grid(evals, json.loads(STYLE))
    ticks = {family: [t.get_text() for t in ax.get_xticklabels()] for family, ax in grid.axes_dict.items()}
    assert ticks == {"cheetah_vel": ["traj_1", "traj_2", "traj_3"],
                     "sparse_point_robot": [f"traj_{k}" for k in range(1, 13)]}
    ax = grid.axes_dict["cheetah_vel"]
    drawn = sorted(tuple(np.round(line.get_ydata(), 6)) for line in ax.lines if len(line.get_ydata()) == 3)
    assert drawn == [(10.5, 20.5, 30.5), (110.5, 120.5, 130.5)]  # mean over seeds 0 and 1 per stage
    assert sorted(t.get_text() for t in grid.legend.texts) == ["pearl", "pearl_ctx"]

    data, png = tmp_path / "evals.csv", tmp_path / "stages.png"
    evals.to_csv(data, index=False)
    cli.main(["plot", "stages", "--data", str(data), "--style", STYLE, "--out", str(png)])
    assert imread(png).shape[1] > 0
