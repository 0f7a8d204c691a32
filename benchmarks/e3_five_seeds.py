"""E3's claims at 5 seeds (benchmarks/pearl.md, "E3's seeds 3 and 4 at quick"): the claims' own rule
(metarl.analysis.claims.decide) on seeds 0-2 as published at b5ab26d and seeds 3-4 from the runs saved
in benchmarks/e3_seeds34_614058a/ (each run's curve.csv and eval.csv, as the pipeline wrote them).

Seeds 0-2 are the per-seed values printed in benchmarks/pearl.md, "E3 at one training code" (the
curve's final stage at its first and last point, one decimal); point_robot's first curve point (at
iteration 1, its eval_every) is not in that table and comes from this session's re-runs of its seeds
0-2, which reproduce the published curve; the sparse robot's goal fractions 37.5 / 45 / 50 % are the
only multiples of 2.5 % (20 goals x 2 runs) with the published 0.442 ± 0.063.

Usage: PYTHONPATH=$PWD python benchmarks/e3_five_seeds.py
"""
from pathlib import Path

import pandas as pd

from metarl.analysis.claims import decide

RUNS = Path(__file__).parent / "e3_seeds34_614058a"
# family: (curve_first, curve_last) per published seed 0, 1, 2
PUBLISHED = {
    "point_robot": (None, (-14.1, -10.8, -12.1)),
    "sparse_point_robot": ((0.5, 0.5, 1.7), (4.0, 4.7, 4.3)),
    "cheetah_vel": ((-271.4, -267.6, -235.0), (-136.8, -132.9, -195.8)),
    "cheetah_dir": ((16.5, 18.4, 22.7), (140.9, 57.1, 410.9)),
    "ant_fwd_back": ((90.8, 127.6, 133.2), (132.9, 35.6, 121.5)),
    "ant_goal": ((-608.4, -605.2, -601.0), (-624.5, -601.8, -608.0)),
    "humanoid_dir": ((498.9, 244.0, 393.0), (321.5, 292.4, 383.2)),
    "walker_params": ((-28.1, 260.4, 103.5), (190.6, 254.3, 150.2)),
}
SPARSE_GOALS_PUBLISHED = (0.375, 0.45, 0.50)


def final_curve(family: str, seed: int) -> pd.Series:
    curve = pd.read_csv(RUNS / family / f"seed{seed}" / "curve.csv")
    return curve[(curve.split == "test") & (curve.stage == "final")].sort_values("iteration")["return"]


def main() -> None:
    rows = []
    for family, (first, last) in PUBLISHED.items():
        if first is None:  # point_robot: every seed re-run here
            first = tuple(final_curve(family, s).iloc[0] for s in range(3))
        new = [final_curve(family, s) for s in (3, 4)]
        for n, (f, l) in {3: (first, last),
                          5: (first + tuple(c.iloc[0] for c in new), last + tuple(c.iloc[-1] for c in new))}.items():
            lhs, rhs = pd.Series(l, index=range(n)), pd.Series(f, index=range(n))
            result = decide("greater", lhs, rhs, paired=True)
            rows.append({"claim": f"{family} learns", "seeds": n, "first": f"{rhs.mean():.4g} ± {rhs.std():.2g}",
                         "last": f"{lhs.mean():.4g} ± {lhs.std():.2g}", "p": round(result["p"], 4),
                         "verdict": result["verdict"], "seeds 3, 4 (first -> last)": "; ".join(
                             f"{c.iloc[0]:.1f} -> {c.iloc[-1]:.1f}" for c in new) if n == 5 else ""})
    evals = [pd.read_csv(RUNS / "sparse_point_robot" / f"seed{s}" / "eval.csv") for s in (3, 4)]
    new_goals = tuple(float((e[(e.split == "test") & (e.stage == "final")]["return"] > 0).mean()) for e in evals)
    for goals in (SPARSE_GOALS_PUBLISHED, SPARSE_GOALS_PUBLISHED + new_goals):
        values = pd.Series(goals)
        result = decide("greater", values, 0.5, paired=False)
        rows.append({"claim": "sparse reaches most goals", "seeds": len(goals), "first": "0.5",
                     "last": f"{values.mean():.3f} ± {values.std():.3f}", "p": round(result["p"], 4),
                     "verdict": result["verdict"],
                     "seeds 3, 4 (first -> last)": ", ".join(f"{g:.3f}" for g in new_goals) if len(goals) == 5 else ""})
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
