# E4 extras: trajectories from prior samples of z, and on the test goals as context accumulates,
# one panel row per latent prior (seed 0 of each method) on the experiment's first family.
if "E4" in EXPERIMENTS:
    EXTRA_FIGURES["E4"] = ["results/E4/figures/prior_samples.png", "results/E4/figures/adaptation.png"]
    E4_FAMILY = config["experiments"]["E4"]["families"][0]
    E4_MODELS = [
        f"results/E4/runs/{family}/{method}/seed0/model.pt"
        for family, method, seed in metarl_config.runs(config, "E4")
        if family == E4_FAMILY and seed == 0
    ]

    rule e4_figure:
        localrule: True
        input:
            models=E4_MODELS,
            taskset=f"results/tasksets/{E4_FAMILY}.json",
        output:
            report(
                "results/E4/figures/{kind}.png",
                caption="../report/e4_figure.rst",  # Jinja: one text per kind
                category="E4",
                labels={"experiment": "E4", "kind": "{kind}"},
            ),
        params:
            style=json.dumps(config["plot"], sort_keys=True),
            kind=lambda w: w.kind.replace("_", "-"),
        wildcard_constraints:
            kind="prior_samples|adaptation",
        log:
            "results/logs/E4/{kind}.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "metarl figure {params.kind} --models {input.models} --taskset {input.taskset}"
            " --style {params.style:q} --out {output} > {log} 2>&1"
