# E1 extras: the exact Bayes-optimal return (reference line) and the belief-rollout figure.
REFERENCE_LINES["E1"] = "results/E1/bayes_optimal.json"
BELIEF_METHODS = [m for m in ("vate", "rl2_10") if m in config["experiments"].get("E1", {}).get("methods", [])]
EXTRA_FIGURES["E1"] = [f"results/E1/figures/belief_{m}.png" for m in BELIEF_METHODS]


rule bayes_optimal:
    localrule: True
    output:
        "results/E1/bayes_optimal.json",
    log:
        "results/logs/E1/bayes_optimal.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl bayes-optimal --out {output} > {log} 2>&1"


rule belief_figure:
    localrule: True
    input:
        model="results/E1/runs/gridworld/{method}/seed0/model.pt",
        taskset="results/tasksets/gridworld.json",
    output:
        report(
            "results/E1/figures/belief_{method}.png",
            caption="../report/belief.rst",
            category="E1",
            labels={"experiment": "E1", "kind": "belief rollout ({method})"},
        ),
    params:
        # only the style key this figure uses, so other style edits do not redraw it
        style=json.dumps({"dpi": config["plot"]["dpi"]}),
    log:
        "results/logs/E1/belief_{method}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl figure belief --models {input.model} --taskset {input.taskset} --style {params.style:q}"
        " --out {output} > {log} 2>&1"
