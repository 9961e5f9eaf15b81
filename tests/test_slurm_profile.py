"""The SLURM profile, for real: snakemake-executor-plugin-slurm against stand-in SLURM commands.

There is no SLURM here, so `tests/slurm_standins/fake_slurm.py` plays sbatch, srun, sacct,
squeue, scancel, sinfo, scontrol and sacctmgr: sbatch records its arguments and runs each job in
the background, sacct/squeue report the job states in the format the plugin parses. A tiny
project copy runs acquire -> extract -> validate -> pretrain -> train of one model through
`snakemake --profile workflow/profiles/slurm`; a second copy runs the same targets with plain
`snakemake --cores 2`. The submitted jobs must carry the profile's account, partition, memory,
runtime and (for training) one GPU; local rules must not be submitted; and both copies must
produce the same validation summary, summaries and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline_e2e import ROOT, env, project_copy, run

PROFILE = ROOT / "workflow/profiles/slurm"
STANDIN = ROOT / "tests/slurm_standins/fake_slurm.py"
TOOLS = ("sbatch", "srun", "sacct", "squeue", "scancel", "sinfo", "scontrol", "sacctmgr")
TARGETS = ["models/builtin/fusion_mlp", "results/builtin/validation.json"]
SUBMITTED = {"extract", "pretrain", "train"}  # acquire and validate are localrules
# Run-specific fields of a training summary: MLflow run ids, wall times, and checkpoint file
# hashes (torch.save names the zip records after the random temporary file the checkpoint is
# written to, so identical weights give different bytes; the weights are compared instead).
VOLATILE = {"mlflow_run_id", "seconds"}


def slurm_params() -> dict:
    """4 speakers x 8 utterances, 2 folds, one fusion model, 3 epochs, one seed, clean only."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["builtin"].update(
        n_speakers=4, utterances_per_speaker=8, n_folds=2, unlabelled_fraction=0.0
    )  # every utterance labelled: 32 samples are few enough
    params["train"].update(epochs=3, patience=0, seeds=[1])
    params["models"] = {"fusion_mlp": params["models"]["fusion_mlp"]}
    params["corrupt"]["conditions"] = {"clean": {"kind": "clean"}}
    return params


def tiny_project(dest: Path) -> Path:
    root = project_copy(dest)
    (root / "params.yaml").write_text(yaml.safe_dump(slurm_params(), sort_keys=False))
    run(["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qam", "p"], root)
    return root


def standin_bin(folder: Path) -> Path:
    """One executable per SLURM tool, each handing over to fake_slurm.py."""
    folder.mkdir()
    for tool in TOOLS:
        script = folder / tool
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" {tool} "$@"\n')
        script.chmod(0o755)
    return folder


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def records(state: Path, name: str) -> list[dict]:
    path = state / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rule_of(argv: list[str]) -> str:
    """The rule from the plugin's `--comment rule_<name>[_wildcards_<...>]`."""
    comment = argv[argv.index("--comment") + 1]
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def option(argv: list[str], name: str) -> str | None:
    """`name VALUE` or `name=VALUE` from an argument list."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def stop_leftover_jobs(state: Path) -> None:
    """Kill the process groups of stand-in jobs still running (only after a failed run)."""
    for job in (state / "jobs").glob("*.json"):
        info = json.loads(job.read_text())
        if info.get("state") == "RUNNING" and info.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(info["pid"]), signal.SIGTERM)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both runs at once: the SLURM run mostly waits for status polls, the local one computes."""
    slurm_root = tiny_project(tmp_path_factory.mktemp("slurm"))
    local_root = tiny_project(tmp_path_factory.mktemp("local"))
    state = tmp_path_factory.mktemp("fake_slurm")
    bin_dir = standin_bin(tmp_path_factory.mktemp("standins") / "bin")
    slurm_env = env()
    slurm_env.update(
        PATH=f"{bin_dir}{os.pathsep}{slurm_env['PATH']}",
        FAKE_SLURM_DIR=str(state),
        FAKE_SLURM_ACCOUNTS=str(profile()["default-resources"]["slurm_account"]),
    )
    cmd = [
        "snakemake",
        "--profile",
        str(PROFILE.relative_to(ROOT)),
        "--workflow-profile",
        "none",  # as docs/cluster.md: no local workflow profile layered over the cluster one
        # The plugin waits 40 s between status checks by default; jobs here take seconds.
        "--slurm-init-seconds-before-status-checks",
        "1",
        *TARGETS,
    ]
    started = time.perf_counter()
    log = state / "snakemake.out"  # a file, not a pipe: nobody reads while the local run goes
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=slurm_root, env=slurm_env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        run(["snakemake", "--cores", "2", *TARGETS], local_root)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        stop_leftover_jobs(state)
    out = log.read_text()
    if proc.returncode:
        logs = "".join(
            f"\n--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted([*(slurm_root / "logs").rglob("*.log"),
                             *(slurm_root / ".snakemake/slurm_logs").rglob("*.log")])
        )  # fmt: skip
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}{logs}")
    return {
        "slurm": slurm_root,
        "local": local_root,
        "state": state,
        "out": out,
        "seconds": time.perf_counter() - started,
    }


@pytest.mark.e2e
def test_jobs_are_submitted_with_the_profiles_resources(runs: dict) -> None:
    cfg = profile()
    defaults, per_rule = cfg["default-resources"], cfg["set-resources"]
    submissions = records(runs["state"], "sbatch.jsonl")
    by_rule = {rule_of(s["argv"]): s["argv"] for s in submissions}
    assert len(submissions) == len(by_rule) == len(SUBMITTED), submissions
    assert set(by_rule) == SUBMITTED, sorted(by_rule)
    for rule, argv in by_rule.items():
        wanted = {**defaults, **per_rule.get(rule, {})}
        assert option(argv, "-A") == wanted["slurm_account"], (rule, argv)
        assert option(argv, "-p") == wanted["slurm_partition"], (rule, argv)
        assert option(argv, "--mem") == str(wanted["mem_mb"]), (rule, argv)
        assert option(argv, "-t") == str(wanted["runtime"]), (rule, argv)
        assert "--parsable" in argv and option(argv, "--wrap"), (rule, argv)
    for rule in ("pretrain", "train"):
        argv = by_rule[rule]
        assert per_rule[rule]["gpu"] == 1
        assert option(argv, "--gpus") == "1", argv
        assert option(argv, "--cpus-per-gpu") == str(per_rule[rule]["cpus_per_gpu"]), argv
    assert option(by_rule["extract"], "--gpus") is None
    assert option(by_rule["extract"], "--cpus-per-task") == "2"  # extract.workers threads
    # The job step inside the allocation asks for the GPU too (srun --gpus=1), else a real
    # cluster would hide the allocated GPU from the training process.
    steps = {s["job_id"]: s["argv"] for s in records(runs["state"], "srun.jsonl")}
    ids = {rule_of(s["argv"]): s["job_id"] for s in submissions}
    assert option(steps[ids["train"]], "--gpus") == "1"
    assert option(steps[ids["extract"]], "--gpus") is None
    states = {p.stem: json.loads(p.read_text())["state"] for p in runs["state"].glob("jobs/*")}
    assert set(states.values()) == {"COMPLETED"}, states
    # Local rules ran in the Snakemake process itself.
    assert "localrule acquire:" in runs["out"] and "localrule validate:" in runs["out"]


def _summary(path: Path) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(path.read_text()))


@pytest.mark.e2e
def test_slurm_run_matches_local_run(runs: dict) -> None:
    import torch

    slurm, local = runs["slurm"], runs["local"]
    rel = "results/builtin/validation.json"
    assert (slurm / rel).read_text() == (local / rel).read_text()
    for rel in ("models/builtin/fusion_mlp/train_summary.json",
                "models/builtin/fusion_mlp.pretrain/pretrain_summary.json"):  # fmt: skip
        assert _summary(slurm / rel) == _summary(local / rel), rel
    checkpoints = sorted(p.relative_to(local) for p in (local / "models").rglob("*.pt"))
    assert checkpoints and checkpoints == sorted(
        p.relative_to(slurm) for p in (slurm / "models").rglob("*.pt")
    )
    for rel in checkpoints:
        a = torch.load(local / rel, map_location="cpu", weights_only=False)
        b = torch.load(slurm / rel, map_location="cpu", weights_only=False)
        assert _same(a, b), rel
    print(f"SLURM profile run (alongside the local one): {runs['seconds']:.0f} s")


def _same(a: object, b: object) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_standins_report_states_as_the_plugin_parses_them(tmp_path: Path) -> None:
    """`<id>|<STATE>` lines from sacct and squeue: failed and cancelled jobs, not only successes."""
    bin_dir = standin_bin(tmp_path / "bin")
    e = dict(os.environ, FAKE_SLURM_DIR=str(tmp_path / "state"))

    def tool(*args: str) -> str:
        return subprocess.run([bin_dir / args[0], *args[1:]], env=e, check=True,
                              capture_output=True, text=True, cwd=tmp_path).stdout  # fmt: skip

    failed = tool("sbatch", "--parsable", "--job-name", "run1", "--wrap=exit 3").strip()
    slow = tool("sbatch", "--parsable", "--job-name", "run1", "--wrap=sleep 60").strip()
    tool("sbatch", "--parsable", "--job-name", "other", "--wrap=true")
    query = ["-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "--name", "run1"]
    deadline = time.monotonic() + 30
    while f"{failed}|FAILED" not in tool("sacct", *query) and time.monotonic() < deadline:
        time.sleep(0.1)
    tool("scancel", slow)
    lines = tool("squeue", "--format=%i|%T", "--states=all", "--noheader", "--name", "run1")
    assert sorted(lines.split()) == sorted([f"{failed}|FAILED", f"{slow}|CANCELLED"])
    bad = subprocess.run([bin_dir / "sbatch", "--bogus", "--wrap=true"], env=e, text=True,
                         capture_output=True)  # fmt: skip
    assert bad.returncode != 0 and "unrecognized option" in bad.stderr
