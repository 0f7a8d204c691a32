RUN = "results/{experiment}/runs/{family}/{method}/seed{seed}"


rule train:
    input:
        taskset="results/tasksets/{family}.json",
    output:
        model=f"{RUN}/model.pt",
        log_csv=f"{RUN}/train_log.csv",
        curve=f"{RUN}/curve.csv",
    params:
        spec=run_spec_json,
        out_dir=RUN,
        # outside the declared outputs, so Snakemake does not delete it before a rerun
        resume="results/.resume/{experiment}/{family}/{method}/seed{seed}.pt",
        # TensorBoard event files, also undeclared: Snakemake would delete them before a resumed
        # job continues them, and the CSVs above stay the results (`tensorboard --logdir results`)
        tensorboard="results/tensorboard/{experiment}/{family}/{method}/seed{seed}",
    log:
        "results/logs/train/{experiment}/{family}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{experiment}/{family}/{method}/seed{seed}.tsv"
    threads: job_resources("train")["threads"]
    resources:
        mem_mb=job_resources("train")["mem_mb"],
        runtime=job_resources("train")["runtime"],
        gpu=job_resources("train")["gpu"],
    shell:
        "metarl train --spec {params.spec:q} --taskset {input.taskset} --out-dir {params.out_dir}"
        " --resume {params.resume} --tensorboard {params.tensorboard} 2>&1 | tee {log}"


rule evaluate:
    input:
        taskset="results/tasksets/{family}.json",
        model=f"{RUN}/model.pt",
    output:
        f"{RUN}/eval.csv",
    params:
        # one job for all splits: a job costs seconds of start-up (torch import, model build)
        splits=lambda w: " ".join(metarl_config.splits(config["experiments"][w.experiment], w.family)["eval_splits"]),
    log:
        "results/logs/evaluate/{experiment}/{family}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{experiment}/{family}/{method}/seed{seed}.tsv"
    threads: job_resources("evaluate")["threads"]
    resources:
        mem_mb=job_resources("evaluate")["mem_mb"],
        runtime=job_resources("evaluate")["runtime"],
        gpu=job_resources("evaluate")["gpu"],
    shell:
        "metarl evaluate --model {input.model} --taskset {input.taskset} --splits {params.splits}"
        " --out {output} > {log} 2>&1"
