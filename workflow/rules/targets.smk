# Named targets: `snakemake E1` (… `E5`) builds one experiment's tables and figures and only the
# jobs they need; `snakemake report` builds everything the HTML report shows (then
# `snakemake --report report.html`). Included after every experiment's rule file, so each
# experiment's extra figures are known.


for _experiment in config["experiments"]:

    rule:
        name:
            _experiment
        localrule: True
        input:
            experiment_outputs(_experiment) if _experiment in EXPERIMENTS else refuse_disabled(_experiment),


rule report:
    localrule: True
    input:
        all_outputs(),


# `snakemake claims` (the paper-claims check) is the `claims` rule itself (workflow/rules/claims.smk).
