# metarl: regenerate the experiments of VATE, TESP, PEARL and structured-latent PEARL.
#   snakemake --cores N                                     local run at the config's scale
#   snakemake --cores N --config scale=smoke                the whole DAG in minutes
#   snakemake --workflow-profile workflow/profiles/slurm    the same DAG on a SLURM cluster
#   snakemake --cores N E1                                  one experiment only (E1 … E5; its jobs only)
#   snakemake --cores N --config videos=True                also rollout videos of E2, E3 (MP4 + report strips)
#   snakemake --cores N claims                              the papers' claims, checked (results/claims.md)
#   snakemake --cores N cost                                what the run's jobs cost (results/cost.txt)
#   snakemake --cores N report                              everything the report shows, then:
#   snakemake --report report.html                          every figure and table in one page
#
# `snakemake --lint` asks for a conda environment or container per rule. Every rule runs the
# `metarl` command from the one installed package (its dependencies pinned in pyproject.toml),
# so per-rule environments would only duplicate that installation; none are declared.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/tasksets.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/e1.smk"
include: "workflow/rules/e2.smk"
include: "workflow/rules/e4.smk"
include: "workflow/rules/e5.smk"
include: "workflow/rules/videos.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/targets.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
