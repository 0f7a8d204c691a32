# Aggregation (data) is separate from tables and plotting (presentation), so that editing the
# plot style reruns only the plotting rules.


rule aggregate:
    localrule: True
    input:
        curves=lambda w: [f"{d}/curve.csv" for d in run_dirs(w.experiment)],
        evals=lambda w: [f"{d}/eval.csv" for d in run_dirs(w.experiment)],
    output:
        curves="results/{experiment}/curves.csv",
        evals="results/{experiment}/evals.csv",
    log:
        "results/logs/aggregate/{experiment}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl aggregate --curves {input.curves} --evals {input.evals}"
        " --out-curves {output.curves} --out-evals {output.evals} > {log} 2>&1"


rule table:
    localrule: True
    input:
        "results/{experiment}/evals.csv",
    output:
        csv="results/{experiment}/table.csv",
        md="results/{experiment}/table.md",
        html=report(
            "results/{experiment}/table.html",
            caption="../report/table.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "kind": "table of final returns"},
        ),
    params:
        title=lambda w: f"{w.experiment}: {config['experiments'][w.experiment]['title']}",
        metric=lambda w: metric_args(w.experiment),
    log:
        "results/logs/table/{experiment}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "metarl table --evals {input} --prefix results/{wildcards.experiment}/table"
        " --title {params.title:q} {params.metric} > {log} 2>&1"


rule plot_curves:
    localrule: True
    input:
        curves="results/{experiment}/curves.csv",
        reference=lambda w: REFERENCE_LINES.get(w.experiment, []),
    output:
        report(
            "results/{experiment}/figures/curves.png",
            caption="../report/curves.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "kind": "learning curves"},
        ),
    params:
        style=json.dumps(config["plot"], sort_keys=True),
        title=lambda w: f"{w.experiment}: {config['experiments'][w.experiment]['title']}",
        reference=lambda w, input: f"--reference {input.reference}" if input.reference else "",
        metric=lambda w: metric_args(w.experiment),
    log:
        "results/logs/plot/{experiment}_curves.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl plot curves --data {input.curves} --style {params.style:q} {params.reference} {params.metric}"
        " --title {params.title:q} --out {output} > {log} 2>&1"


rule plot_stages:
    localrule: True
    input:
        "results/{experiment}/evals.csv",
    output:
        report(
            "results/{experiment}/figures/stages.png",
            caption="../report/stages.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "kind": "return per evaluation stage"},
        ),
    params:
        style=json.dumps(config["plot"], sort_keys=True),
        title=lambda w: f"{w.experiment}: {config['experiments'][w.experiment]['title']}",
        metric=lambda w: metric_args(w.experiment),
    log:
        "results/logs/plot/{experiment}_stages.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl plot stages --data {input} --style {params.style:q} --title {params.title:q} {params.metric}"
        " --out {output} > {log} 2>&1"
