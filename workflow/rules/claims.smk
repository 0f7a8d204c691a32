# The papers' headline claims (config.yaml `claims:`), checked on the aggregated per-seed results.
# The rule sees only the claims and the run matrix (params), so editing a hyper-parameter reruns it
# only through the results it reads.
from metarl.analysis import claims as metarl_claims

CLAIMS_PLAN = metarl_claims.plan(config)


rule claims:
    localrule: True
    input:
        metarl_claims.required_inputs(CLAIMS_PLAN),
    output:
        csv="results/claims.csv",
        md="results/claims.md",
        html=report(
            "results/claims.html",
            caption="../report/claims.rst",
            category="Claims",  # sorts before the experiments: the report's first section
            labels={"kind": "headline claims, checked"},
        ),
    params:
        plan=json.dumps(CLAIMS_PLAN, sort_keys=True),
    log:
        "results/logs/claims.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "metarl claims --plan {params.plan:q} --results results --out-prefix results/claims > {log} 2>&1"
