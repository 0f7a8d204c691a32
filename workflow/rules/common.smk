# Config validation and the job matrix. Every job gets only its own slice of the config
# (as params), so editing one method's hyper-parameter reruns only that method's jobs.
import json
import shlex
import sys

from metarl import config as metarl_config

# `metarl` in rules runs on the interpreter running Snakemake, called directly: a
# version-manager shim in front of the `metarl` script (pyenv, conda run) costs seconds per
# job, which dominates small jobs. Snakemake's default strict-mode prefix is kept.
# (Snakemake formats the prefix like a shell command, hence the doubled braces.)
shell.prefix("set -euo pipefail; metarl() {{ " + shlex.quote(sys.executable) + ' -m metarl "$@"; }}; ')

metarl_config.validate(config)

EXPERIMENTS = metarl_config.enabled_experiments(config)


wildcard_constraints:
    experiment="E[1-5]",
    family="[a-z0-9_]+",
    method="[a-z0-9_]+",
    seed=r"\d+",


def run_dirs(experiment):
    return [
        f"results/{experiment}/runs/{family}/{method}/seed{seed}"
        for family, method, seed in metarl_config.runs(config, experiment)
    ]


def run_evaluations():
    """Every enabled run's evaluation: the last file of its training and evaluation jobs."""
    return [f"{run}/eval.csv" for experiment in EXPERIMENTS for run in run_dirs(experiment)]


def run_spec_json(wildcards):
    spec = metarl_config.run_spec(
        config, wildcards.experiment, wildcards.family, wildcards.method, int(wildcards.seed)
    )
    return json.dumps(spec, sort_keys=True)


def job_resources(kind):
    return config["resources"][kind]


# experiment -> its own figures / reference-line file; each experiment's rule file adds its entries
EXTRA_FIGURES = {}
REFERENCE_LINES = {}


def experiment_outputs(experiment):
    """The tables and figures of one experiment (what `snakemake <experiment>` builds). An
    experiment under the common protocol (E5) draws its stages as adaptation curves instead."""
    stages = [] if "protocol" in config["experiments"][experiment] else [f"results/{experiment}/figures/stages.png"]
    return [
        f"results/{experiment}/table.html",
        f"results/{experiment}/figures/curves.png",
        *stages,
        *EXTRA_FIGURES.get(experiment, []),
    ]


def all_outputs():
    outputs = [output for experiment in EXPERIMENTS for output in experiment_outputs(experiment)]
    if config.get("claims"):
        outputs += ["results/claims.html", "results/claims.md"]
    return outputs + ["results/cost.txt"]


# experiment -> the evaluation column its tables and figures show and its name, where that is not
# the return (an experiment's rule file adds its entry)
METRICS = {}


def metric_args(experiment):
    metric = METRICS.get(experiment)
    return f"--metric {metric['column']} --metric-label {shlex.quote(metric['label'])}" if metric else ""


def video_split(experiment):
    """Rollout videos (videos.smk): the experiment's first evaluation split of tasks not trained on."""
    exp = config["experiments"][experiment]
    return next(split for split in exp["eval_splits"] if split != exp["train_split"])


def refuse_disabled(experiment):
    """Input function of a disabled experiment's target: asking for it is an error that says why."""

    def refuse(wildcards):
        raise ValueError(f"experiment {experiment} is disabled (enabled: false in config.yaml)")

    return refuse
