"""End-to-end test of workflow/profiles/slurm on a real (single-node) SLURM cluster.

The session fixture starts a throw-away cluster with tests/slurm/cluster.sh
(munged + slurmctld + slurmd on localhost, no accounting database).  It needs
root (or passwordless sudo, used only for cluster.sh start/stop) and the Debian
packages from .ci/install-slurm.sh; if either is missing the tests FAIL (they
never skip: CI installs the packages first).  Deselect with
``pytest -m "not slurm"`` on a machine without SLURM.

Two runs go through ``snakemake --workflow-profile workflow/profiles/slurm``:

* ``test_toy_workflow_gpu_path``: tests/slurm/toy/Snakefile with the profile's
  defaults, i.e. ``train`` requests one GPU (the test node offers a fake one) and
  ``evaluate`` none; checks what SLURM actually allocated.
* ``test_pipeline_through_slurm``: the repository's pipeline (E1, smoke scale) with
  GPUs switched off via METARL_SLURM_GPUS=0, as on a CPU-only cluster.

Both assert that the jobs really went through SLURM: job ids from snakemake's
log, the per-job logs in .snakemake/slurm_logs/, and ``scontrol show job``.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
TOY_WORKFLOW = REPO / "tests" / "slurm" / "toy"
PROFILE = "workflow/profiles/slurm"

# Rules that must have been run as SLURM jobs (the cheap ones are localrules).
REPO_EXPECTED_SLURM_RULES = {"train", "evaluate"}

# Safety net only (the smoke DAG should take a few minutes; an overloaded
# 2-core machine needs ~10).
SNAKEMAKE_TIMEOUT_S = int(os.environ.get("METARL_SLURM_TEST_TIMEOUT", "1200"))

# Options the test adds to the profile: no sacct on the test cluster, and
# poll quickly (the plugin's defaults are tuned for big clusters: 40 s before
# the first status check).  --retries 0 so that a broken job fails at once.
TEST_ARGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
    "--slurm-keep-successful-logs",
    "--latency-wait",
    "5",
    "--retries",
    "0",
]


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(lines[-n:])


class Cluster:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.conf = state_dir / "etc" / "slurm.conf"
        # one fake GPU on the node: test_toy_workflow_gpu_path needs it
        self.env = {
            **os.environ,
            "SLURM_TEST_DIR": str(state_dir),
            "SLURM_TEST_GPUS": "1",
            "SLURM_CONF": str(self.conf),
        }

    def script(self, action: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = ["bash", str(CLUSTER_SH), action]
        if os.geteuid() != 0:  # checked by the fixture: passwordless sudo works
            cmd = ["sudo", "-n", "env", f"SLURM_TEST_DIR={self.dir}", "SLURM_TEST_GPUS=1", *cmd]
        return subprocess.run(
            cmd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def daemon_logs(self, n: int = 40) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            parts.append(f"----- tail -n {n} {self.dir / 'log' / name} -----")
            parts.append(_tail(self.dir / "log" / name, n))
        return "\n".join(parts)

    def scontrol_job(self, jobid: str) -> dict[str, str]:
        out = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", jobid],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, f"scontrol show job {jobid} failed: {out.stderr}"
        fields = {}
        for tok in out.stdout.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                fields.setdefault(k, v)
        return fields


@pytest.fixture(scope="session")
def slurm_cluster():
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol") if not shutil.which(b)]
    if missing:
        pytest.fail(
            f"SLURM is not installed (missing: {', '.join(missing)}); run .ci/install-slurm.sh "
            "(as root), or deselect these tests with -m 'not slurm'",
            pytrace=False,
        )
    if os.geteuid() != 0:
        sudo = subprocess.run(["sudo", "-n", "true"], capture_output=True, text=True) if shutil.which("sudo") else None
        if sudo is None or sudo.returncode != 0:
            pytest.fail(
                "the SLURM test cluster must be started by root (slurmd launches the jobs): run pytest "
                "as root or with passwordless sudo, or deselect with -m 'not slurm'",
                pytrace=False,
            )
    # short path: munged's unix socket lives in there (sun_path is 108 bytes)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="metarl-slurm-", dir="/tmp")))
    t0 = time.monotonic()
    res = cluster.script("start")
    if res.returncode != 0:
        cluster.script("stop")
        pytest.fail(
            f"could not start the SLURM test cluster (rc={res.returncode}):\n"
            f"{res.stdout}\n{res.stderr}\n{cluster.daemon_logs()}",
            pytrace=False,
        )
    print(f"SLURM test cluster up in {time.monotonic() - t0:.1f}s ({cluster.dir})")
    try:
        yield cluster
    finally:
        res = cluster.script("stop")
        if res.returncode != 0:
            print(f"cluster.sh stop failed:\n{res.stdout}\n{res.stderr}", file=sys.stderr)


def run_snakemake(cluster: Cluster, workdir: Path, extra_args: list[str], env_extra: dict[str, str]) -> str:
    """Run snakemake through the SLURM executor in workdir; return its output."""
    env = dict(cluster.env)
    # the jobs call `metarl` (console script of this interpreter's environment)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(env_extra)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        str(workdir / PROFILE),
        *TEST_ARGS,
        *extra_args,
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S
        )
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        subprocess.run(["scancel", "--full", f"--user={getpass.getuser()}"], env=cluster.env, capture_output=True)
        rc = None
    elapsed = time.monotonic() - t0
    print(f"snakemake through SLURM took {elapsed:.1f}s (rc={rc})")
    (workdir / "snakemake-test.log").write_text(out)
    if rc != 0:
        job_logs = []
        for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
            job_logs.append(f"----- tail {log} -----\n{_tail(log, 30)}")
        squeue = subprocess.run(
            ["squeue", "-t", "all", "-o", "%i %j %T %r %k"], env=cluster.env, capture_output=True, text=True
        )
        pytest.fail(
            f"snakemake {'timed out' if rc is None else f'failed (rc={rc})'} after {elapsed:.0f}s: "
            f"{' '.join(cmd)}\n(cwd {workdir})\n"
            f"----- snakemake output (tail) -----\n{os.linesep.join(out.splitlines()[-80:])}\n"
            + "\n".join(job_logs)
            + f"\n----- squeue -t all -----\n{squeue.stdout}{squeue.stderr}\n"
            + cluster.daemon_logs(),
            pytrace=False,
        )
    return out


def submitted_jobs(out: str) -> dict[str, Path]:
    """SLURM job id -> slurm log file, from snakemake's 'submitted with SLURM jobid' lines."""
    jobs = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", out, re.MULTILINE))
    assert jobs, f"no 'submitted with SLURM jobid' line in snakemake's output:\n{out[-4000:]}"
    return {jobid: Path(log) for jobid, log in jobs.items()}


def check_jobs_went_through_slurm(cluster: Cluster, workdir: Path, out: str) -> dict[str, dict[str, str]]:
    """Assert every submitted job left a log and is COMPLETED in slurmctld; return rule -> scontrol fields."""
    by_rule: dict[str, dict[str, str]] = {}
    for jobid, log in submitted_jobs(out).items():
        assert log.is_file(), f"SLURM log {log} of job {jobid} is missing"
        assert log.resolve().is_relative_to((workdir / ".snakemake" / "slurm_logs").resolve())
        info = cluster.scontrol_job(jobid)
        assert info.get("JobState") == "COMPLETED", f"job {jobid}: {info}\n{_tail(log)}"
        assert info.get("Partition") == "debug", info
        # the plugin puts "rule_<name>[_wildcards_...]" into the job comment
        m = re.match(r"rule_([A-Za-z0-9_]+?)(?:_wildcards_|$)", info.get("Comment", ""))
        assert m, f"job {jobid} has no snakemake rule comment: {info}"
        by_rule.setdefault(m.group(1), info)
    return by_rule


def test_cluster_runs_plain_jobs(slurm_cluster):
    """Sanity check of the cluster itself: srun and sbatch --wrap."""
    env = slurm_cluster.env
    r = subprocess.run(["srun", "-n1", "hostname"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip(), f"srun failed: {r.stderr}\n{slurm_cluster.daemon_logs()}"
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        out = Path(d) / "out.txt"
        r = subprocess.run(
            ["sbatch", "--parsable", "--wait", "-o", str(out), "--wrap", "echo sbatch-ok"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert r.returncode == 0, f"sbatch failed: {r.stderr}\n{slurm_cluster.daemon_logs()}"
        assert out.read_text().strip() == "sbatch-ok"
        assert slurm_cluster.scontrol_job(r.stdout.strip().split(";")[0])["JobState"] == "COMPLETED"


def _toy_workdir(tmp_path: Path) -> Path:
    shutil.copy(TOY_WORKFLOW / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(REPO / PROFILE, tmp_path / PROFILE)
    return tmp_path


def test_toy_workflow_gpu_path(slurm_cluster, tmp_path):
    """Profile defaults: `train` asks for a GPU (gets the node's fake one), `evaluate` does not."""
    workdir = _toy_workdir(tmp_path)
    out = run_snakemake(slurm_cluster, workdir, [], {})
    by_rule = check_jobs_went_through_slurm(slurm_cluster, workdir, out)
    assert set(by_rule) == {"train", "evaluate"}, by_rule.keys()
    train_tres = by_rule["train"].get("AllocTRES", "") + by_rule["train"].get("TresPerJob", "")
    assert "gpu" in train_tres, f"train job got no GPU: {by_rule['train']}"
    eval_tres = by_rule["evaluate"].get("AllocTRES", "") + by_rule["evaluate"].get("TresPerJob", "")
    assert "gpu" not in eval_tres, f"evaluate job got a GPU: {by_rule['evaluate']}"
    train = (workdir / "results/toy/train.txt").read_text()
    evaluate = (workdir / "results/toy/evaluate.txt").read_text()
    assert "gpu=1" in train and "cuda=none" not in train, train
    assert "gpu=0" in evaluate and "cuda=none" in evaluate, evaluate
    assert "slurm_job=" in train and "slurm_job= " not in train, train


def test_pipeline_through_slurm(slurm_cluster, tmp_path, repo_config):
    """The repository's pipeline end to end through the slurm executor, GPUs switched off:
    E1 at smoke scale with two methods (every rule of the DAG, in a CI-sized budget)."""
    config = yaml.safe_load(yaml.safe_dump(repo_config))
    config["scale"] = "smoke"
    config["experiments"] = {"E1": {**config["experiments"]["E1"], "methods": ["vate", "rl2_10"]}}
    config["claims"] = [c for c in config["claims"] if c["experiment"] == "E1"]  # the others name E2-E4
    workdir, extra, expected = copy_workflow(tmp_path, config), [], REPO_EXPECTED_SLURM_RULES
    out = run_snakemake(slurm_cluster, workdir, extra, {"METARL_SLURM_GPUS": "0"})
    by_rule = check_jobs_went_through_slurm(slurm_cluster, workdir, out)
    assert expected <= set(by_rule), f"rules run through SLURM: {sorted(by_rule)}, expected {sorted(expected)}"
    for rule, info in by_rule.items():
        tres = info.get("AllocTRES", "") + info.get("TresPerJob", "")
        assert "gpu" not in tres, f"{rule} job got a GPU although METARL_SLURM_GPUS=0: {info}"
    for name in ["table.html", "figures/curves.png", "figures/belief_vate.png"]:
        assert (workdir / "results" / "E1" / name).stat().st_size > 0, name
