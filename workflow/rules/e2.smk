# E2 extra: the ablation figure, TESP against its variants V1–V5 on the 2-link reacher.
# E2's tables and figures show the TESP paper's metric: the return without the control cost
# (the methods still learn from the reward with it; both are in evals.csv and curves.csv).
METRICS["E2"] = {"column": "distance_return", "label": "return (distance only, as TESP paper)"}
ABLATION_FAMILY = "reacher_2link"
E2 = config["experiments"].get("E2", {"families": [], "methods": []})
ABLATION_METHODS = [m for m in ("tesp", "tesp_v1", "tesp_v2", "tesp_v3", "tesp_v4", "tesp_v5") if m in E2["methods"]]
if "E2" in EXPERIMENTS and ABLATION_FAMILY in E2["families"] and len(ABLATION_METHODS) > 1:
    EXTRA_FIGURES["E2"] = ["results/E2/figures/ablation.png"]


rule plot_ablation:
    localrule: True
    input:
        "results/E2/curves.csv",
    output:
        report(
            "results/E2/figures/ablation.png",
            caption="../report/ablation.rst",
            category="E2",
            labels={"experiment": "E2", "kind": "TESP ablations (2-link reacher)"},
        ),
    params:
        style=json.dumps(config["plot"], sort_keys=True),
        family=ABLATION_FAMILY,
        methods=" ".join(ABLATION_METHODS),
        metric=metric_args("E2"),
    log:
        "results/logs/plot/E2_ablation.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl plot curves --data {input} --style {params.style:q} --families {params.family}"
        " --methods {params.methods} {params.metric} --title 'E2: TESP ablations on the 2-link reacher'"
        " --out {output} > {log} 2>&1"
