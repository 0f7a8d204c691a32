# Rollout videos (opt-in, `videos: true`): for seed 0 of every MuJoCo run of E2 and E3, the
# first and last evaluation trajectory on the first test tasks (metarl/videos.py), as an MP4
# plus a PNG strip for the report. E4's point robot is drawn by its own figures instead.
from metarl.envs.mujoco_batch import MUJOCO_FAMILIES

VIDEO_EXPERIMENTS = ("E2", "E3")
VIDEO_TASKS = 2  # the split's first tasks
VIDEO_SIZE = 256  # pixels, square

if config.get("videos", False):  # the schema default
    for _experiment in VIDEO_EXPERIMENTS:
        if _experiment in EXPERIMENTS:
            EXTRA_FIGURES.setdefault(_experiment, []).extend(
                f"results/{_experiment}/videos/{family}/{method}.png"
                for family, method, seed in metarl_config.runs(config, _experiment)
                if seed == 0 and family in MUJOCO_FAMILIES
            )


rule video:
    input:
        taskset="results/tasksets/{family}.json",
        model="results/{experiment}/runs/{family}/{method}/seed0/model.pt",
    output:
        video="results/{experiment}/videos/{family}/{method}.mp4",
        strip=report(
            "results/{experiment}/videos/{family}/{method}.png",
            caption="../report/videos.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "kind": "rollouts: {family}, {method}"},
        ),
    params:
        split=lambda w: video_split(w.experiment),
        tasks=VIDEO_TASKS,
        size=VIDEO_SIZE,
    log:
        "results/logs/video/{experiment}/{family}/{method}.log",
    threads: job_resources("evaluate")["threads"]
    resources:
        mem_mb=job_resources("evaluate")["mem_mb"],
        runtime=job_resources("evaluate")["runtime"],
        gpu=job_resources("evaluate")["gpu"],
    shell:
        "metarl video --model {input.model} --taskset {input.taskset} --split {params.split}"
        " --tasks {params.tasks} --size {params.size} --out {output.video} --strip {output.strip} > {log} 2>&1"
