# What the run cost: `metarl bench dag` over the benchmark files of the DAG's training and
# evaluation jobs (Snakemake's `benchmark:` directive, workflow/rules/training.smk). It needs every
# run's evaluation, so it runs last; files of runs no longer in the config are left out.


rule cost:
    localrule: True
    input:
        run_evaluations(),
    output:
        report(
            "results/cost.txt",
            caption="../report/cost.rst",
            category="Cost",
            labels={"kind": "job time and memory"},
        ),
    params:
        # the targets (≤ 4 h of job time, ≤ 30 min a job) are the quick scale's
        targets="" if config["scale"] == "quick" else "--no-targets",
    log:
        "results/logs/cost.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl bench dag --dir results/benchmarks --runs {input} {params.targets} > {output} 2> {log}"
