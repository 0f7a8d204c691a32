"""The papers' headline claims (config.yaml ``claims:``), checked against our per-seed results.

A claim compares a *left* side with one or more *right* sides. A side is a method's per-seed
values (one number per seed: the mean over the split's test tasks of a metric at an evaluation
stage), a constant, or a reference value (``bayes_optimal``, ``known_goal``). Metrics:

* ``return``        eval.csv: mean return over the test tasks at ``stage``;
* ``goal_reached``  eval.csv, sparse families only: fraction of test tasks whose sparse return at
  ``stage`` is > 0 (of eval.csv's rows: with PEARL's ``eval_runs`` > 1, of the test tasks' runs).
  The sparse reward is 1 − distance inside the goal radius and 0 outside, so a nonzero return on
  a trajectory means the agent entered the goal radius on it;
* ``curve_first`` / ``curve_last`` / ``curve_mean``  curve.csv: the learning curve's first point
  (after the first ``eval_every`` iterations), last point, or mean over its points;
* ``curve_at_budget``  curve.csv: the learning curve at the meta-training env-step budget of the
  method ``budget_of`` (its final env steps on that family, mean over its seeds): per seed, the
  last curve point within the budget, or the first point if even that one is past the budget
  (it has then used more steps than the budget, which can only favour it). A side whose runs end
  before the budget (below 95 % of it) has no value there and the comparison is *missing*. This is how "fewer
  env steps for the same return" is checked: both sides at the same number of env steps.

``return`` and the curve metrics read the ``return`` column unless the claim names another
``column``: ``distance_return`` is the TESP paper's metric (distance term only, no control cost),
recorded by TESP-family methods on the reaching families.

Statistical rule (alpha = 0.05, at least 3 seeds on every method side), one rule for all ops:
the claim is **reproduced** when one-sided tests at level alpha put the effect inside the claimed
region; **not reproduced** when the point estimate lies outside the claimed region (our data
point the other way); **inconclusive** when the point estimate agrees but the test does not
reach significance with these seeds, or a side has fewer than 3 seeds; **missing** when the
runs are disabled, not configured for that family, or their results are absent.

* ``greater``: lhs > rhs. One-sided Welch t-test (unequal variances, Welch–Satterthwaite df);
  a paired t-test on per-seed differences when both sides are the same runs (same method and
  family, another stage/split/metric); a one-sample t-test against a constant.
* ``within`` (``tolerance`` r): |lhs − rhs| ≤ r·|rhs|. TOST: two one-sided tests of
  lhs − (1 ∓ r·sign(rhs))·rhs, both significant (sign(rhs) from its mean). Each bound is a linear
  combination of the two means, so the Welch variance applies as is (no ratio approximation).
* ``equivalent`` (``margin`` δ, in the metric's units): |lhs − rhs| ≤ δ, by TOST.

The Student-t distribution is computed here (regularised incomplete beta function) so that
scipy is not a dependency.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metarl.methods import FINAL_STAGE

ALPHA = 0.05
MIN_SEEDS = 3
METRICS = ("return", "goal_reached", "curve_first", "curve_last", "curve_mean", "curve_at_budget")
CURVE_METRICS = ("curve_first", "curve_last", "curve_mean", "curve_at_budget")
REFERENCES = ("bayes_optimal", "known_goal")
#: curve_at_budget: a run must reach this share of the budget (seeds of the budget's method may
#: end a little apart where episodes terminate early)
BUDGET_REACHED = 0.95
COLUMNS = ("return", "distance_return")
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "missing")


# ----------------------------------------------------------------------------- Student t


def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return value


def incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on this side
        return math.exp(log_front) * _incomplete_beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _incomplete_beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on ``t_cdf``)."""
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- tests


@dataclass(frozen=True)
class Estimate:
    """A linear contrast mean(lhs) − c·mean(rhs) with its standard error and degrees of freedom."""
    value: float
    se: float
    df: float
    test: str

    def p_greater(self, bound: float) -> float:
        """One-sided p-value of H0: contrast ≤ bound (against contrast > bound)."""
        if self.se == 0.0:
            return 0.0 if self.value > bound else 1.0
        return 1.0 - t_cdf((self.value - bound) / self.se, self.df)

    def p_less(self, bound: float) -> float:
        if self.se == 0.0:
            return 0.0 if self.value < bound else 1.0
        return t_cdf((self.value - bound) / self.se, self.df)


def contrast(lhs: pd.Series, rhs: pd.Series | float, c: float = 1.0, paired: bool = False) -> Estimate:
    """mean(lhs) − c·mean(rhs) over per-seed values (Series indexed by seed); ``rhs`` a float is
    a known constant. Welch for independent runs, paired when both sides are the same runs."""
    if not isinstance(rhs, pd.Series):
        n = len(lhs)
        return Estimate(lhs.mean() - c * rhs, lhs.std(ddof=1) / math.sqrt(n), n - 1, "one-sample t")
    if paired:
        seeds = lhs.index.intersection(rhs.index)
        diff = lhs[seeds] - c * rhs[seeds]
        return Estimate(diff.mean(), diff.std(ddof=1) / math.sqrt(len(diff)), len(diff) - 1, "paired t")
    a, b = lhs.var(ddof=1) / len(lhs), c * c * rhs.var(ddof=1) / len(rhs)
    se2 = a + b
    df = se2 * se2 / (a * a / (len(lhs) - 1) + b * b / (len(rhs) - 1)) if se2 > 0 else float(len(lhs) + len(rhs) - 2)
    return Estimate(lhs.mean() - c * rhs.mean(), math.sqrt(se2), df, "Welch t")


def decide(op: str, lhs: pd.Series, rhs: pd.Series | float, paired: bool, tolerance=None, margin=None) -> dict:
    """Verdict, statistic and p-value for one comparison (see the module docstring)."""
    rhs_mean = rhs.mean() if isinstance(rhs, pd.Series) else rhs
    diff = contrast(lhs, rhs, 1.0, paired)
    half_width = t_ppf(1.0 - ALPHA, diff.df) * diff.se  # one-sided (1 − alpha) bound
    if op == "greater":
        p = diff.p_greater(0.0)
        inside, significant = diff.value > 0, p < ALPHA
        statistic = (f"t = {_t(diff)}, df = {diff.df:.1f}, difference {diff.value:+.3g} "
                     f"(≥ {diff.value - half_width:+.3g} at {1 - ALPHA:.0%})")
    else:
        if op == "within":
            sign = 1.0 if rhs_mean >= 0 else -1.0
            low = contrast(lhs, rhs, 1.0 - tolerance * sign, paired)   # lhs − (rhs − r|rhs|) > 0
            high = contrast(lhs, rhs, 1.0 + tolerance * sign, paired)  # lhs − (rhs + r|rhs|) < 0
            p = max(low.p_greater(0.0), high.p_less(0.0))
            inside = low.value >= 0 and high.value <= 0
            relative = diff.value / abs(rhs_mean) if rhs_mean else float("nan")
            statistic = f"TOST, relative difference {relative:+.1%}, band ± {tolerance:.0%}"
        else:  # equivalent
            p = max(diff.p_greater(-margin), diff.p_less(margin))
            inside = abs(diff.value) <= margin
            statistic = (f"TOST, difference {diff.value:+.3g}, {1 - 2 * ALPHA:.0%} CI "
                         f"[{diff.value - half_width:+.3g}, {diff.value + half_width:+.3g}], band ± {margin:g}")
        significant = p < ALPHA
    verdict = "reproduced" if inside and significant else "inconclusive" if inside else "not reproduced"
    return {"verdict": verdict, "test": diff.test, "statistic": statistic, "p": p}


def _t(estimate: Estimate) -> str:
    if estimate.se == 0:
        return "0" if estimate.value == 0 else "+inf" if estimate.value > 0 else "-inf"
    return f"{estimate.value / estimate.se:.2f}"


# ----------------------------------------------------------------------------- claim rows


def known_goal_episode_return(goal, start=None) -> float:
    """Return of one gridworld episode when the goal is known: the shortest path, then staying
    on the goal (as ``best_episode`` in metarl/bayes_optimal.py)."""
    from metarl.envs import gridworld as gw

    start = gw.START if start is None else start
    d = max(abs(goal[0] - start[0]) + abs(goal[1] - start[1]), 1)
    return gw.STEP_REWARD * (d - 1) + gw.GOAL_REWARD * (gw.HORIZON - d + 1)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def side_spec(side, claim: dict) -> dict:
    """Normalise a side: a method name, a number, or a dict overriding the claim's
    ``metric``/``stage``/``split`` (for a method) or naming a ``reference``."""
    if isinstance(side, bool) or not isinstance(side, (str, int, float, dict)):
        raise ValueError(f"a side must be a method name, a number or a mapping, got {side!r}")
    if isinstance(side, (int, float)):
        return {"constant": float(side)}
    if isinstance(side, str):
        side = {"method": side}
    if "reference" in side:
        return dict(side)
    return {"metric": claim["metric"], "split": claim.get("split"), "stage": claim.get("stage", FINAL_STAGE),
            "column": claim.get("column", "return"), "budget_of": claim.get("budget_of"), **side}


def label(side: dict) -> str:
    if "constant" in side:
        return f"{side['constant']:g}"
    if "reference" in side:
        return side["reference"]
    return side["method"]


def expand(claim: dict, experiment: dict) -> list[dict]:
    """One comparison per (family, stage, lhs, rhs) of a claim. ``family`` defaults to every
    family of the experiment; ``stage``, ``family``, ``lhs`` and ``rhs`` may be lists."""
    families = _as_list(claim.get("family", experiment["families"]))
    stages = _as_list(claim.get("stage", FINAL_STAGE))
    rows = []
    for family, stage, lhs, rhs in itertools.product(families, stages, _as_list(claim["lhs"]), _as_list(claim["rhs"])):
        per_stage = {**claim, "stage": stage}
        left, right = side_spec(lhs, per_stage), side_spec(rhs, per_stage)
        varying = [v for v, many in [(family, len(families) > 1), (stage, len(stages) > 1),
                                     (label(left), len(_as_list(claim["lhs"])) > 1),
                                     (label(right), len(_as_list(claim["rhs"])) > 1)] if many]
        rows.append({"id": claim["id"] + (f"[{', '.join(varying)}]" if varying else ""), "claim": claim,
                     "family": family, "stage": stage, "lhs": left, "rhs": right})
    return rows


def method_sides(row: dict) -> list[dict]:
    return [s for s in (row["lhs"], row["rhs"]) if "method" in s]


def stages_of(spec: dict) -> list[str]:
    """Evaluation stages a run reports, as the methods' ``evaluate()`` write them."""
    from metarl.envs import get_family
    from metarl.methods import get_algorithm

    from metarl.protocol import consumed_stage

    if "protocol_episodes" in spec:
        return [*(consumed_stage(k) for k in range(spec["protocol_episodes"])), FINAL_STAGE]
    hp = get_algorithm(spec["algo"]).make_hparams(spec["hparams"])
    if spec["algo"] == "random":
        stages = []
    elif spec["algo"] == "vate":
        episodes = getattr(get_family(spec["family"]), "episodes", 1)
        stages = [f"episode_{e + 1}" for e in range(episodes)]
    elif spec["algo"] == "pearl":
        stages = [f"traj_{k + 1}" for k in range(hp.eval_trajectories)]
    else:  # tesp
        stages = ["warmup"] * (hp.embedding == "encoder") + [f"update_{k}" for k in range(hp.fast_updates + 1)]
    return [*stages, FINAL_STAGE]


def check_claims(config: dict) -> None:
    """Cross-references of config.yaml's ``claims`` (the schema checked their shape): raises
    ConfigError naming the claim for an unknown experiment, method, family, split, stage or
    reference, or a metric the family does not have."""
    from metarl.config import ConfigError, run_spec, runs

    seen = set()
    for claim in config.get("claims", []):
        name = f"claims: claim {claim['id']!r}"
        if claim["id"] in seen:
            raise ConfigError(f"{name}: duplicate id")
        seen.add(claim["id"])
        if claim["experiment"] not in config["experiments"]:
            raise ConfigError(f"{name}: unknown experiment {claim['experiment']!r}; "
                              f"defined: {sorted(config['experiments'])}")
        exp = config["experiments"][claim["experiment"]]
        for family in _as_list(claim.get("family", [])):
            if family not in exp["families"]:
                raise ConfigError(f"{name}: family {family!r} is not among {claim['experiment']}'s families {exp['families']}")
        if claim["op"] == "within" and "tolerance" not in claim:
            raise ConfigError(f"{name}: op 'within' needs a relative 'tolerance'")
        if claim["op"] == "equivalent" and "margin" not in claim:
            raise ConfigError(f"{name}: op 'equivalent' needs an absolute 'margin'")
        configured = set(runs(config, claim["experiment"]))
        for row in expand(claim, exp):
            if "method" not in row["lhs"]:
                raise ConfigError(f"{name}: the left side must be a method, got {label(row['lhs'])!r}")
            for side in method_sides(row):
                _check_side(config, name, claim, row, side, configured, run_spec)
            if "reference" in row["rhs"]:
                _check_reference(name, claim, row)


def _check_side(config, name, claim, row, side, configured, run_spec):
    from metarl.config import ConfigError
    from metarl.config import splits as splits_of
    from metarl.envs import get_family

    exp, method, family = config["experiments"][claim["experiment"]], side["method"], row["family"]
    if method not in config["methods"]:
        raise ConfigError(f"{name}: unknown method {method!r}; defined methods: {sorted(config['methods'])}")
    if side["metric"] not in METRICS:
        raise ConfigError(f"{name}: unknown metric {side['metric']!r}; known: {list(METRICS)}")
    if side["metric"] == "curve_at_budget" and side["budget_of"] not in exp["methods"]:
        raise ConfigError(f"{name}: metric 'curve_at_budget' needs 'budget_of', one of {claim['experiment']}'s "
                          f"methods {exp['methods']}; got {side['budget_of']!r}")
    family_splits = splits_of(exp, family)
    splits = family_splits["curve_splits"] if side["metric"] in CURVE_METRICS else family_splits["eval_splits"]
    if side["split"] not in splits:
        kind = "curve_splits" if side["metric"] in CURVE_METRICS else "eval_splits"
        raise ConfigError(f"{name}: split {side['split']!r} is not in experiments.{claim['experiment']}.{kind} {splits}")
    if side["metric"] == "goal_reached" and not getattr(get_family(family), "sparse", False):
        raise ConfigError(f"{name}: metric 'goal_reached' needs a sparse-reward family, {family!r} is not")
    if side["column"] not in COLUMNS:
        raise ConfigError(f"{name}: unknown column {side['column']!r}; known: {list(COLUMNS)}")
    if side["column"] == "distance_return" and (
            side["metric"] == "goal_reached" or config["methods"][method]["algo"] != "tesp"
            or not getattr(get_family(family), "distance_reward", False)):
        raise ConfigError(f"{name}: column 'distance_return' is recorded by tesp-algorithm methods on the reaching "
                          f"families (metric return or curve_*), not by {method} on {family} with metric {side['metric']!r}")
    if not any((family, method) == (f, m) for f, m, _ in configured):
        return  # not run: reported as missing, nothing more to check
    stages = stages_of(run_spec(config, claim["experiment"], family, method, 0))
    if side["stage"] not in stages:
        raise ConfigError(f"{name}: stage {side['stage']!r} is not reported by {method} on {family} "
                          f"at scale {config['scale']}; its stages: {stages}")


def _check_reference(name, claim, row):
    from metarl.config import ConfigError

    reference, stage = row["rhs"]["reference"], row["lhs"]["stage"]
    if reference not in REFERENCES:
        raise ConfigError(f"{name}: unknown reference {reference!r}; known: {list(REFERENCES)}")
    if row["family"] != "gridworld" or row["lhs"]["metric"] != "return":
        raise ConfigError(f"{name}: reference {reference!r} is the gridworld's return (family gridworld, metric return)")
    if reference == "bayes_optimal" and (claim["experiment"] != "E1" or stage != FINAL_STAGE):
        raise ConfigError(f"{name}: reference 'bayes_optimal' is E1's return over the meta-episode (stage final)")
    if reference == "known_goal" and not (stage == FINAL_STAGE or re.fullmatch(r"episode_\d+", stage)):
        raise ConfigError(f"{name}: reference 'known_goal' is per episode (stage episode_k) or per meta-episode (final)")


# ----------------------------------------------------------------------------- the plan


def plan(config: dict) -> dict:
    """What the claims rule needs from the config: the claims and, per experiment referenced,
    whether it is enabled, its families and the (family, method) pairs it runs. Nothing else,
    so editing a hyper-parameter does not rerun the claims rule by itself."""
    from metarl.config import enabled_experiments, runs, scale_families

    enabled = set(enabled_experiments(config))
    experiments = {}
    for name in sorted({c["experiment"] for c in config.get("claims", [])}):
        exp = config["experiments"][name]
        experiments[name] = {"enabled": name in enabled, "families": scale_families(config, name), "methods": exp["methods"],
                             "runs": sorted({(f, m) for f, m, _ in runs(config, name)})}
    return {"claims": config.get("claims", []), "experiments": experiments}


def required_inputs(plan: dict, results="results") -> list[str]:
    """Files the claims rule reads: each enabled experiment's aggregated evaluations and curves,
    and the reference files its claims use."""
    files = []
    for name, exp in plan["experiments"].items():
        if exp["enabled"]:
            files += [f"{results}/{name}/evals.csv", f"{results}/{name}/curves.csv"]
    for claim in plan["claims"]:
        if not plan["experiments"][claim["experiment"]]["enabled"]:
            continue
        for row in expand(claim, plan["experiments"][claim["experiment"]]):
            reference = row["rhs"].get("reference")
            if reference == "bayes_optimal":
                files.append(f"{results}/E1/bayes_optimal.json")
            elif reference == "known_goal":
                files.append(f"{results}/tasksets/{row['family']}.json")
    return list(dict.fromkeys(files))


# ----------------------------------------------------------------------------- evaluation


class Missing(Exception):
    """A side's values cannot be had; the message says why (the claim is reported as missing)."""


class Results:
    """Lazy access to results/<E>/{evals,curves}.csv and the reference files."""

    def __init__(self, root="results"):
        self.root = Path(root)
        self._frames = {}

    def frame(self, experiment: str, kind: str) -> pd.DataFrame:
        path = self.root / experiment / f"{kind}.csv"
        if path not in self._frames:
            if not path.exists():
                raise Missing(f"{path} not found")
            self._frames[path] = pd.read_csv(path)
        return self._frames[path]

    def per_seed(self, experiment: str, family: str, side: dict) -> pd.Series:
        """One value per seed (Series indexed by seed)."""
        kind = "curves" if side["metric"] in CURVE_METRICS else "evals"
        frame = self.frame(experiment, kind)
        rows = frame[(frame["family"] == family) & (frame["method"] == side["method"])
                     & (frame["split"] == side["split"]) & (frame["stage"] == side["stage"])]
        if rows.empty:
            raise Missing(f"no {kind} rows for {side['method']} on {family}, split {side['split']}, stage {side['stage']}")
        by_seed = rows.groupby("seed")
        if side["metric"] == "curve_at_budget":
            budget = self.budget(experiment, family, side)
            ends = by_seed["env_steps"].max()
            if (ends < BUDGET_REACHED * budget).any():
                raise Missing(f"{side['method']}'s runs on {family} end at {int(ends.min()):,} env steps, before the "
                              f"budget of {budget:,.0f}: their return at the budget is unknown (train them longer)")
            return by_seed.apply(lambda r: float(_at_budget(r, budget, side["column"])))
        if side["metric"] == "return":
            values = by_seed[side["column"]].mean()
        elif side["metric"] == "goal_reached":
            values = by_seed["return"].apply(lambda r: float((r > 0).mean()))
        else:
            ordered = rows.sort_values("iteration").groupby("seed")[side["column"]]
            values = {"curve_first": ordered.first, "curve_last": ordered.last, "curve_mean": ordered.mean}[side["metric"]]()
        return values.astype(float)

    def budget(self, experiment: str, family: str, side: dict) -> float:
        """Meta-training env steps of ``budget_of`` on ``family``: its last curve point, mean over seeds."""
        frame = self.frame(experiment, "curves")
        rows = frame[(frame["family"] == family) & (frame["method"] == side["budget_of"])]
        if rows.empty:
            raise Missing(f"no curves of {side['budget_of']} on {family} to take the env-step budget from")
        return float(rows.groupby("seed")["env_steps"].max().mean())

    def reference(self, experiment: str, row: dict) -> float:
        name, family = row["rhs"]["reference"], row["family"]
        if name == "bayes_optimal":
            # the prior's expectation (the paper's number), not the agent's return on the evaluated
            # split as known_goal below: Bayes-optimal agents tie under the prior but not on a finite
            # split (tests/test_bayes_optimal.py, test_bayes_optimal_agents_differ_on_a_finite_split)
            path = self.root / "E1" / "bayes_optimal.json"
            if not path.exists():
                raise Missing(f"{path} not found")
            return float(json.loads(path.read_text())["values"][family])
        # known_goal: the return with the goal known, averaged over the very test tasks evaluated
        path = self.root / "tasksets" / f"{family}.json"
        if not path.exists():
            raise Missing(f"{path} not found")
        tasks = json.loads(path.read_text())["splits"][row["lhs"]["split"]]
        evals = self.frame(experiment, "evals")
        evaluated = evals[(evals["family"] == family) & (evals["method"] == row["lhs"]["method"])
                          & (evals["split"] == row["lhs"]["split"])]["task"].unique()
        if len(evaluated) == 0:
            raise Missing(f"no evaluated {family} tasks for {row['lhs']['method']}")
        per_episode = float(np.mean([known_goal_episode_return(tasks[i]["goal"]) for i in evaluated]))
        if row["lhs"]["stage"] == FINAL_STAGE:
            from metarl.envs import gridworld as gw

            return per_episode * gw.EPISODES
        return per_episode


def _at_budget(rows: pd.DataFrame, budget: float, column: str) -> float:
    """One run's curve value at ``budget`` env steps (see ``curve_at_budget``)."""
    rows = rows.sort_values("env_steps")
    within = rows[rows["env_steps"] <= budget]
    return (within if len(within) else rows)[column].iloc[-1 if len(within) else 0]


def _why_not_run(plan: dict, experiment: str, row: dict) -> str | None:
    exp = plan["experiments"][experiment]
    if not exp["enabled"]:
        return f"{experiment} is disabled (experiments.{experiment}.enabled: false)"
    for side in method_sides(row):
        if side["method"] not in exp["methods"]:
            return f"{side['method']} is not in experiments.{experiment}.methods"
        if [row["family"], side["method"]] not in [list(r) for r in exp["runs"]]:
            return f"{side['method']} does not run on {row['family']} in {experiment} (method_families or not_run)"
    return None


def _summary(values) -> dict:
    if isinstance(values, pd.Series):
        return {"mean": values.mean(), "sd": values.std(ddof=1) if len(values) > 1 else float("nan"), "n": len(values)}
    return {"mean": values, "sd": float("nan"), "n": float("nan")}


def evaluate_claims(plan: dict, results="results") -> pd.DataFrame:
    store = Results(results)
    out = []
    for claim in plan["claims"]:
        experiment = claim["experiment"]
        for row in expand(claim, plan["experiments"][experiment]):
            record = {"id": row["id"], "paper": claim["paper"], "experiment": experiment, "family": row["family"],
                      "claim": claim["text"],
                      "metric": row["lhs"]["metric"] + (f" ({row['lhs']['column']})" if row["lhs"]["column"] != "return" else ""),
                      "split": row["lhs"]["split"],
                      "stage": row["lhs"]["stage"], "lhs": _side_text(row["lhs"], row["lhs"]), "op": _op_text(claim),
                      "rhs": _side_text(row["rhs"], row["lhs"])}
            out.append({**record, **_evaluate_row(plan, store, claim, row)})
    columns = ["id", "paper", "experiment", "family", "claim", "metric", "split", "stage", "lhs", "lhs_mean", "lhs_sd",
               "lhs_n", "op", "rhs", "rhs_mean", "rhs_sd", "rhs_n", "test", "statistic", "p", "verdict", "reason"]
    table = pd.DataFrame(out, columns=columns)
    return table.astype({"lhs_n": "Int64", "rhs_n": "Int64"})


def _evaluate_row(plan, store, claim, row) -> dict:
    experiment = claim["experiment"]
    reason = _why_not_run(plan, experiment, row)
    if reason:
        return {"verdict": "missing", "reason": reason}
    try:
        lhs = store.per_seed(experiment, row["family"], row["lhs"])
        rhs = (store.per_seed(experiment, row["family"], row["rhs"]) if "method" in row["rhs"]
               else store.reference(experiment, row) if "reference" in row["rhs"] else row["rhs"]["constant"])
    except Missing as err:
        return {"verdict": "missing", "reason": str(err)}
    sides = {**{f"lhs_{k}": v for k, v in _summary(lhs).items()}, **{f"rhs_{k}": v for k, v in _summary(rhs).items()}}
    few = [(label(s), len(v)) for s, v in ((row["lhs"], lhs), (row["rhs"], rhs))
           if isinstance(v, pd.Series) and len(v) < MIN_SEEDS]
    if few:
        return {**sides, "verdict": "inconclusive",
                "reason": "; ".join(f"{m}: {n} seed(s), need ≥ {MIN_SEEDS}" for m, n in few)}
    paired = isinstance(rhs, pd.Series) and row["rhs"]["method"] == row["lhs"]["method"]
    result = decide(claim["op"], lhs, rhs, paired, claim.get("tolerance"), claim.get("margin"))
    reason = {"reproduced": f"significant at alpha = {ALPHA}",
              "inconclusive": f"point estimate agrees with the claim, not significant at alpha = {ALPHA}",
              "not reproduced": "point estimate outside the claimed region"}[result["verdict"]]
    return {**sides, "test": result["test"], "statistic": result["statistic"], "p": result["p"],
            "verdict": result["verdict"], "reason": reason}


def _side_text(side: dict, lhs: dict) -> str:
    if "method" not in side:
        return label(side)
    differs = [f"{k} {side[k]}" for k in ("metric", "split", "stage") if side[k] != lhs[k]]
    return side["method"] + (f" ({', '.join(differs)})" if differs else "")


def _op_text(claim: dict) -> str:
    if claim["op"] == "greater":
        return ">"
    if claim["op"] == "within":
        return f"within {claim['tolerance']:.0%} of"
    return f"≈ (± {claim['margin']:g})"


# ----------------------------------------------------------------------------- output


def _cell(mean, sd, n) -> str:
    if pd.isna(mean):
        return "—"
    if pd.isna(n):
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {sd:.2g} (n={int(n)})" if not pd.isna(sd) else f"{mean:.3g} (n={int(n)})"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """One readable row per comparison: each side as 'value ± sd (n)', the test and the verdict."""
    def sides(prefix):
        return [f"{s}: {_cell(m, d, n)}" for s, m, d, n in
                zip(table[prefix], table[f"{prefix}_mean"], table[f"{prefix}_sd"], table[f"{prefix}_n"])]

    return pd.DataFrame({
        "claim": table["id"], "paper": table["paper"], "statement": table["claim"],
        "metric": table["metric"] + ", " + table["split"] + ", " + table["stage"] + ", " + table["family"],
        "lhs": sides("lhs"), "op": table["op"], "rhs": sides("rhs"),
        "test": ["—" if pd.isna(p) else f"{t}; {st}; p = {p:.3g}"
                 for t, st, p in zip(table["test"], table["statistic"], table["p"])],
        "verdict": table["verdict"], "why": table["reason"]})


RULE_TEXT = (f"Each side: mean ± sd over seeds of the per-seed mean over the split's test tasks. "
             f"`>`: one-sided Welch t-test (paired t-test when both sides are the same runs; one-sample "
             f"against a constant); `within`/`≈`: TOST with the stated relative tolerance / absolute margin. "
             f"Reproduced: significant at alpha = {ALPHA}; not reproduced: point estimate outside the claimed "
             f"region; inconclusive: direction agrees but not significant, or fewer than {MIN_SEEDS} seeds on "
             f"a side; missing: runs disabled or absent. goal_reached: fraction of test tasks (PEARL with "
             f"eval_runs > 1: of their adaptation runs) with a nonzero sparse return (the goal radius was entered).")


def _tally(shown: pd.DataFrame) -> str:
    counts = shown["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)


def claims_markdown(shown: pd.DataFrame) -> str:
    """claims.md from a `display_table` (also how `metarl publish` rewrites a merged one)."""
    return (f"# Headline claims of the four papers, checked\n\n{_tally(shown)}.\n\n{RULE_TEXT}\n\n"
            f"{shown.to_markdown(index=False)}\n")


def write_claims(table: pd.DataFrame, prefix) -> None:
    from metarl.utils.io import save_csv, save_text

    save_csv(table, f"{prefix}.csv")
    shown = display_table(table)
    tally = _tally(shown)
    save_text(claims_markdown(shown), f"{prefix}.md")
    colours = {"reproduced": "#d4edda", "not reproduced": "#f8d7da", "inconclusive": "#fff3cd", "missing": "#e2e3e5"}
    html = shown.to_html(index=False, border=0, classes="table table-striped", escape=True)
    for verdict, colour in colours.items():
        html = html.replace(f"<td>{verdict}</td>", f'<td style="background:{colour}">{verdict}</td>')
    save_text(f"<h3>Headline claims of the four papers, checked</h3>\n<p>{tally}.</p>\n<p>{RULE_TEXT}</p>\n{html}",
              f"{prefix}.html")
