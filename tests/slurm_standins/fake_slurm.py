"""A one-machine stand-in for the SLURM commands snakemake-executor-plugin-slurm 2.x calls.

`fake_slurm.py TOOL ARGS...` behaves like TOOL (sbatch, srun, sacct, squeue, scancel, sinfo,
scontrol, sacctmgr) as far as the plugin relies on it; tests put tiny wrappers named after each
tool first on PATH. All state lives under $FAKE_SLURM_DIR:

- `sbatch.jsonl` / `srun.jsonl`: every call's full argument list (what the test asserts on);
- `jobs/<id>.json`: name, comment, state (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED),
  exit code and runner pid of each job.

sbatch runs the job for real, in the background (a detached runner process), with the output
file, working directory and environment the plugin asked for; GPU requests are recorded and
otherwise ignored, so GPU jobs run on the CPU. Unknown options make sbatch fail as the real one
does, so a change in what the plugin emits shows up as a failed test, not a silent pass.
$FAKE_SLURM_ACCOUNTS (comma-separated) are the accounts sacctmgr reports for the user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", ".fake_slurm"))
JOBS = STATE / "jobs"
# sbatch options the plugin emits that take a separate value (`--mem 4000`, `-A acct`).
SBATCH_VALUED = {"--job-name", "--output", "--comment", "-A", "-p", "-t", "-C", "--mem",
                 "--mem-per-cpu", "-D", "--clusters"}  # fmt: skip
# ... and those it writes as `--opt=value` or bare flags.
SBATCH_FLAGS = {"--parsable", "--export", "--ntasks", "--ntasks-per-gpu", "--cpus-per-task",
                "--cpus-per-gpu", "--gpus", "--gres", "--nodes", "--qos", "--requeue",
                "--no-requeue", "--reservation", "--exclude", "--array", "--wrap"}  # fmt: skip


def _append(name: str, record: dict) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")


def _write_job(job_id: str, **fields: object) -> dict:
    """Update a job's record atomically (status queries may read it at any moment)."""
    path = JOBS / f"{job_id}.json"
    job = json.loads(path.read_text()) if path.exists() else {}
    job.update(fields)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)
    return job


def _jobs() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(JOBS.glob("*.json"))}


def _next_id() -> str:
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(STATE / "next_id", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        job_id = int(f.read().strip() or 1000) + 1
        f.seek(0)
        f.truncate()
        f.write(str(job_id))
    return str(job_id)


def _parse_sbatch(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in SBATCH_VALUED and not eq:
            opts[name] = next(args)
        elif name in SBATCH_VALUED or name in SBATCH_FLAGS:
            opts[name] = value
        elif arg == "/dev/stdin":
            opts["script"] = sys.stdin.read()
        else:
            sys.exit(f"sbatch: error: unrecognized option '{arg}'")
    if "--wrap" not in opts and "script" not in opts:
        sys.exit("sbatch: error: no --wrap and no batch script")
    return opts


def sbatch(argv: list[str]) -> None:
    opts = _parse_sbatch(argv)
    job_id = _next_id()
    _append("sbatch.jsonl", {"job_id": job_id, "argv": argv})
    _write_job(
        job_id,
        name=opts.get("--job-name", ""),
        comment=opts.get("--comment", ""),
        state="PENDING",
        exit_code=None,
        command=opts.get("--wrap") or opts["script"],
        workdir=opts.get("-D") or os.getcwd(),
        output=opts.get("--output", "slurm-%j.out").replace("%j", job_id),
        gpus=opts.get("--gpus", ""),
    )
    # The runner outlives this process, as a real job outlives sbatch.
    subprocess.Popen(
        [sys.executable, __file__, "_run", job_id],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(job_id if "--parsable" in opts else f"Submitted batch job {job_id}")


def _run(job_id: str) -> None:
    """Run one submitted job: the environment a SLURM job step would see, then its exit state."""
    job = json.loads((JOBS / f"{job_id}.json").read_text())
    if job["state"] == "CANCELLED":  # scancel'ed while pending
        return
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_JOBID=job_id, SLURM_JOB_NAME=job["name"])
    if job["gpus"]:
        env["SLURM_GPUS"] = job["gpus"]
    out = Path(job["workdir"], job["output"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as log:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", job["command"]],
            cwd=job["workdir"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _write_job(job_id, state="RUNNING", pid=proc.pid)
        code = proc.wait()
    if json.loads((JOBS / f"{job_id}.json").read_text())["state"] != "CANCELLED":
        _write_job(job_id, state="COMPLETED" if code == 0 else "FAILED", exit_code=code)


def srun(argv: list[str]) -> None:
    """`srun [options] CMD...`: record the step's options, then run CMD in this allocation."""
    _append("srun.jsonl", {"job_id": os.environ.get("SLURM_JOB_ID"), "argv": argv})
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    if i == len(argv):
        sys.exit("srun: fatal: No command given to execute.")
    os.execvp(argv[i], argv[i:])


def _option(argv: list[str], *names: str) -> str | None:
    """`NAME VALUE` or `NAME=VALUE`, the two forms the plugin writes."""
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in names:
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def _status_lines(argv: list[str]) -> list[str]:
    name = _option(argv, "--name")
    wanted = _option(argv, "-j", "--jobs")
    lines = []
    for job_id, job in _jobs().items():
        if name is not None and job["name"] != name:
            continue
        if wanted is not None and job_id not in wanted.split(","):
            continue
        lines.append(f"{job_id}|{job['state']}")
    return lines


def sacct(argv: list[str]) -> None:
    """The plugin's status query (`-X --parsable2 --noheader --format=JobIdRaw,State --name
    RUN_UUID`); step reasons (`-j ID.STEP --format=Reason`) and node lists print nothing."""
    fmt = (_option(argv, "--format", "-o") or "JobIdRaw,State").lower()
    if fmt != "jobidraw,state":
        return
    print("\n".join(_status_lines(argv)))


def squeue(argv: list[str]) -> None:
    """`squeue --format='%i|%T' --states=all --noheader --name RUN_UUID`."""
    print("\n".join(_status_lines(argv)))


def scancel(argv: list[str]) -> None:
    for job_id in (a for a in argv if not a.startswith("-")):
        job = _write_job(job_id, state="CANCELLED")
        if job.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(job["pid"]), signal.SIGTERM)


def sinfo(argv: list[str]) -> None:
    print("PARTITION\ncpu*\ngpu")


def scontrol(argv: list[str]) -> None:
    if argv[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 300 sec")


def sacctmgr(argv: list[str]) -> None:
    accounts = os.environ.get("FAKE_SLURM_ACCOUNTS", "")
    print("\n".join(a.strip() for a in accounts.split(",") if a.strip()))


TOOLS = {f.__name__: f for f in (sbatch, srun, sacct, squeue, scancel, sinfo, scontrol, sacctmgr)}

if __name__ == "__main__":
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "_run":
        _run(args[0])
    else:
        TOOLS[tool](args)
