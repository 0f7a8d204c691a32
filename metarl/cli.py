"""`metarl` command: one subcommand per pipeline stage (the Snakemake rules call these), plus
benchmarks and reference computations."""
from __future__ import annotations

import argparse
import json
import sys


def _taskset(args) -> None:
    from metarl.tasksets import write_taskset

    write_taskset(args.family, args.seed, args.out)


def _train(args) -> None:
    from metarl.training import train

    train(json.loads(args.spec), args.taskset, args.out_dir, args.resume, args.checkpoint_every,
          log=lambda line: print(line, flush=True), tensorboard_dir=args.tensorboard)


def _evaluate(args) -> None:
    from metarl.evaluation import evaluate

    evaluate(args.model, args.taskset, args.splits, args.out)


def _video(args) -> None:
    from metarl.videos import write_video

    write_video(args.model, args.taskset, args.out, args.strip, args.split, args.tasks, args.size, args.stride)


def _aggregate(args) -> None:
    from metarl.analysis.aggregate import concat_csvs
    from metarl.utils.io import save_csv

    save_csv(concat_csvs(args.curves), args.out_curves)
    save_csv(concat_csvs(args.evals), args.out_evals)


def _table(args) -> None:
    import pandas as pd

    from metarl.analysis.tables import write_tables

    write_tables(pd.read_csv(args.evals), args.prefix, args.title, args.metric, args.metric_label or args.metric)


def _plot(args) -> None:
    import pandas as pd

    from metarl.analysis import plots

    style, label = json.loads(args.style), args.metric_label or args.metric
    if args.kind == "curves":
        plots.plot_curves(pd.read_csv(args.data), args.out, style, plots.load_reference(args.reference), args.title,
                          args.families, args.methods, args.metric, label)
    elif args.kind in ("heatmap", "adaptation"):
        from metarl.analysis import matrix

        draw = matrix.plot_heatmap if args.kind == "heatmap" else matrix.plot_adaptation
        draw(pd.read_csv(args.data), args.out, style, args.title)
    else:
        plots.plot_stages(pd.read_csv(args.data), args.out, style, args.title, args.metric, label)


def _matrix(args) -> None:
    import pandas as pd

    from metarl.analysis import matrix

    plan = json.loads(args.plan)
    table = matrix.build_matrix(pd.read_csv(args.evals), plan)
    matrix.write_matrix(table, args.prefix, args.title, plan["episodes"])


def _figure(args) -> None:
    style = json.loads(args.style)
    if args.kind == "belief":
        from metarl.analysis.belief import plot_belief_rollout

        if len(args.models) != 1:
            raise SystemExit(f"figure belief draws one model, got --models {' '.join(args.models)}")
        plot_belief_rollout(args.models[0], args.taskset, args.out, dpi=style["dpi"])
    elif args.kind == "prior-samples":
        from metarl.analysis.pearl_figures import prior_samples_figure

        prior_samples_figure(args.models, args.taskset, args.out, plot=style)
    else:
        from metarl.analysis.pearl_figures import adaptation_figure

        adaptation_figure(args.models, args.taskset, args.out, plot=style)


def _claims(args) -> None:
    from metarl.analysis import claims

    if args.plan:
        plan = json.loads(args.plan)
    else:
        from metarl import config as metarl_config

        config = metarl_config.load(args.config)
        if args.scale:
            config["scale"] = args.scale
            metarl_config.validate(config)
        plan = claims.plan(config)
    table = claims.evaluate_claims(plan, args.results)
    claims.write_claims(table, args.out_prefix)
    print(table["verdict"].value_counts().to_string())


def _bench(args) -> None:
    import importlib

    module = {"envs": "metarl.bench_envs", "pearl": "metarl.bench_pearl", "tesp": "metarl.bench_tesp",
              "vate": "metarl.bench_vate", "profile": "metarl.profiling", "dag": "metarl.bench_dag"}[args.what]
    importlib.import_module(module).main(args.passthrough)


def _publish(args) -> None:
    from metarl import publish

    publish.main(args.passthrough)


def _bayes_optimal(args) -> None:
    from metarl import bayes_optimal

    bayes_optimal.main(args.passthrough)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("taskset", help="sample every split's tasks of one family into a JSON file")
    p.add_argument("--family", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_taskset)

    p = sub.add_parser("train", help="meta-train one run (resumes from --resume if present)")
    p.add_argument("--spec", required=True, help="resolved run spec as JSON (see metarl.config.run_spec)")
    p.add_argument("--taskset", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--resume", required=True, help="checkpoint file kept outside the job's outputs")
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--tensorboard", help="also write the logged scalars as TensorBoard event files here")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a trained model on the given splits (one CSV)")
    p.add_argument("--model", required=True)
    p.add_argument("--taskset", required=True)
    p.add_argument("--splits", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("video", help="MP4 of a trained model's first and last evaluation trajectory on its first "
                       "test tasks (MuJoCo families), plus a PNG strip")
    p.add_argument("--model", required=True)
    p.add_argument("--taskset", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--tasks", type=int, default=2, help="how many of the split's first tasks")
    p.add_argument("--size", type=int, default=256, help="frame width and height in pixels")
    p.add_argument("--stride", type=int, default=1, help="render every STRIDE-th state (the video stays real time)")
    p.add_argument("--out", required=True, help="the MP4")
    p.add_argument("--strip", required=True, help="the PNG strip")
    p.set_defaults(func=_video)

    p = sub.add_parser("aggregate", help="concatenate per-run curves and evaluations")
    p.add_argument("--curves", nargs="+", required=True)
    p.add_argument("--evals", nargs="+", required=True)
    p.add_argument("--out-curves", required=True)
    p.add_argument("--out-evals", required=True)
    p.set_defaults(func=_aggregate)

    p = sub.add_parser("table", help="final-return tables (CSV, Markdown, HTML) from aggregated evaluations")
    p.add_argument("--evals", required=True)
    p.add_argument("--prefix", required=True, help="output path without extension")
    p.add_argument("--title", default="Final returns")
    p.add_argument("--metric", default="return", help="the evaluation column to tabulate (E2: distance_return)")
    p.add_argument("--metric-label", help="its name in the tables (default: the column name)")
    p.set_defaults(func=_table)

    p = sub.add_parser("matrix", help="E5's methods x families matrix under the common adaptation protocol "
                       "(CSV, Markdown, HTML)")
    p.add_argument("--evals", required=True, help="the experiment's aggregated evals.csv")
    p.add_argument("--plan", required=True, help="the matrix rule's plan as JSON (metarl.analysis.matrix.matrix_plan)")
    p.add_argument("--prefix", required=True, help="output path without extension")
    p.add_argument("--title", default="Methods x families")
    p.set_defaults(func=_matrix)

    p = sub.add_parser("plot", help="learning curves, return per evaluation stage, E5's normalised-score heatmap "
                       "or adaptation curves (return vs episodes consumed)")
    p.add_argument("kind", choices=["curves", "stages", "heatmap", "adaptation"])
    p.add_argument("--data", required=True, help="aggregated curves.csv (curves), evals.csv (stages, adaptation) "
                   "or matrix.csv (heatmap)")
    p.add_argument("--style", required=True, help="the config's plot section as JSON")
    p.add_argument("--reference", help="JSON with reference lines {label, values: {family: value}}")
    p.add_argument("--families", nargs="+", help="curves: only these families (default: all)")
    p.add_argument("--methods", nargs="+", help="curves: only these methods, in this order (default: all)")
    p.add_argument("--metric", default="return", help="the column to plot (E2: distance_return)")
    p.add_argument("--metric-label", help="its axis label (default: the column name)")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plot)

    p = sub.add_parser("figure", help="experiment-specific figures drawn from trained models: E1 belief "
                       "rollout (one model), E4 trajectories from prior samples or during online adaptation")
    p.add_argument("kind", choices=["belief", "prior-samples", "adaptation"])
    p.add_argument("--models", nargs="+", required=True, help="model.pt files, one panel (row) each")
    p.add_argument("--taskset", required=True)
    p.add_argument("--style", required=True, help="the config's plot section as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_figure)

    p = sub.add_parser("claims", help="check the papers' headline claims (config.yaml `claims:`) against the "
                       "aggregated results: results/claims.{csv,md,html}")
    p.add_argument("--plan", help="the claims rule's plan as JSON (metarl.analysis.claims.plan); default: "
                   "built from --config")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--scale", help="with --config: override its scale")
    p.add_argument("--results", default="results", help="the results folder to read")
    p.add_argument("--out-prefix", default="results/claims", help="output path without extension")
    p.set_defaults(func=_claims)

    # these hand their remaining arguments to the module's own parser
    p = sub.add_parser("bench", add_help=False, help="throughput benchmarks, the per-phase profile of a training slice, or "
                       "`dag`: the cost of a pipeline run from its benchmark files (`metarl bench WHAT --help`)")
    p.add_argument("what", choices=["envs", "pearl", "tesp", "vate", "profile", "dag"])
    p.set_defaults(func=_bench, passthrough_ok=True)

    p = sub.add_parser("publish", add_help=False, help="copy a finished run's claims, tables, main figures and "
                       "cost from results/ into docs/results/ (`metarl publish --help`)")
    p.set_defaults(func=_publish, passthrough_ok=True)

    p = sub.add_parser("bayes-optimal", add_help=False,
                       help="exact Bayes-optimal return of the E1 gridworld (`--help` for options)")
    p.set_defaults(func=_bayes_optimal, passthrough_ok=True)
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and not getattr(args, "passthrough_ok", False):
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    args.passthrough = passthrough
    from metarl.utils.errors import USER_ERRORS
    from metarl.utils.runtime import keep_freed_memory

    keep_freed_memory()

    try:
        args.func(args)
    except USER_ERRORS as error:  # a bad file or a diverged run: its message says it all, no traceback
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
