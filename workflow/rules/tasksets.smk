rule taskset:
    localrule: True
    output:
        "results/tasksets/{family}.json",
    params:
        seed=config["taskset_seed"],
    log:
        "results/logs/taskset/{family}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "metarl taskset --family {wildcards.family} --seed {params.seed} --out {output} > {log} 2>&1"
