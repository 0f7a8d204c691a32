# E5 extras: the methods x families matrix under the common adaptation protocol (table and
# normalised-score heatmap) and the adaptation curves (return vs episodes consumed), which replace
# the generic per-stage figure for this experiment.
from metarl.analysis import matrix as metarl_matrix

if "E5" in EXPERIMENTS:
    EXTRA_FIGURES["E5"] = [
        "results/E5/matrix.html",
        "results/E5/figures/heatmap.png",
        "results/E5/figures/adaptation.png",
    ]

    rule e5_matrix:
        localrule: True
        input:
            "results/E5/evals.csv",
        output:
            csv="results/E5/matrix.csv",
            md="results/E5/matrix.md",
            html=report(
                "results/E5/matrix.html",
                caption="../report/matrix.rst",
                category="E5",
                labels={"experiment": "E5", "kind": "methods x families matrix"},
            ),
        params:
            # the random policy is the zero of the normalised score
            plan=json.dumps(metarl_matrix.matrix_plan(config, "E5", baseline="random"), sort_keys=True),
            title=f"E5: {config['experiments']['E5']['title']}",
        log:
            "results/logs/E5/matrix.log",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        shell:
            "metarl matrix --evals {input} --plan {params.plan:q} --prefix results/E5/matrix"
            " --title {params.title:q} > {log} 2>&1"

    rule e5_figure:
        localrule: True
        input:
            lambda w: "results/E5/matrix.csv" if w.kind == "heatmap" else "results/E5/evals.csv",
        output:
            report(
                "results/E5/figures/{kind}.png",
                caption="../report/e5_figure.rst",  # Jinja: one text per kind
                category="E5",
                labels={"experiment": "E5", "kind": "{kind}"},
            ),
        params:
            style=json.dumps(config["plot"], sort_keys=True),
            title=lambda w: "normalised score" if w.kind == "heatmap" else "return vs episodes consumed",
        wildcard_constraints:
            kind="heatmap|adaptation",
        log:
            "results/logs/E5/{kind}.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "metarl plot {wildcards.kind} --data {input} --style {params.style:q} --title {params.title:q}"
            " --out {output} > {log} 2>&1"
