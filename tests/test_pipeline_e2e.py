"""End to end: the whole pipeline through `dvc repro` and through `snakemake` on tiny corpora.

Both run in temporary copies of the project with the same tiny params file (Snakemake on a
subset of the models, see SNAKEMAKE_MODELS): two datasets (the
built-in corpus and an audio-only folder of labelled wav files), a small robustness grid
(feature-level and raw-media conditions) and one cross-corpus cell (built-in -> folder). They
must finish, agree exactly on every metric, the fusion baseline must beat chance by a wide
margin, accuracy must fall as the missing rate and the audio noise grow, and on the audio-only
dataset the models and conditions that need video or text are skipped.

The models are the baselines and two methods that pretrain (NMER: a teacher for stage 2; VAT: a
different network whose shared weights it keeps), so every kind of stage runs for real. The
other methods go through the same generic stages (the DVC matrix and Snakemake wildcards over
models, which tests/test_workflow_parity.py plans for every method in both front doors) and
learn through train_model / evaluate_model in their own tests (tests/test_imder_pipeline.py,
tests/test_semi.py, ...); keeping them out of this run keeps CI under its time target. Feature
noise is scored like the missing rate (a stored condition, no re-extraction): its kind is
tested in tests/test_feature_noise.py and tests/test_conditions.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dataset_fixtures_raw import build_folder

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ("audio_mlp", "fusion_mlp", "nmer", "vat")
# Snakemake runs the same rules on a subset (the cheap baselines and one pretraining method):
# each model's cells are independent, so its metrics must equal DVC's, and the dry-run parity
# test (tests/test_workflow_parity.py) checks that both front doors plan the same jobs for all.
SNAKEMAKE_MODELS = ("audio_mlp", "fusion_mlp", "vat")
TINY_CONDITIONS = {
    "clean": {"kind": "clean"},
    "missing_rate": {"kind": "missing_rate", "levels": [0.0, 0.6]},
    "audio_snr": {"kind": "audio_noise", "noise": "babble", "levels": [20, -5]},
    "video_blur": {"kind": "video_blur", "levels": [1, 4]},
}
# The audio-only dataset: 6 speakers x 3 classes of sine tones, 3 speaker folds.
FOLDER_SPEAKERS = ("ann", "bob", "cat", "dan", "eve", "fay")
NEEDS_VIDEO_OR_TEXT = ("fusion_mlp", "nmer", "vat")
pytestmark = pytest.mark.e2e


def tiny_params(folder: Path | None = None, models: tuple[str, ...] = TINY_MODELS) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # 16 labelled utterances per speaker, and 8 in the unlabelled pool (VAT pretrains on it too).
    params["acquire"]["builtin"].update(
        n_speakers=6, utterances_per_speaker=24, n_folds=3, unlabelled_fraction=1 / 3
    )
    # One training seed: several seeds (mean ± std over folds and seeds, per-model seeds) are
    # covered by tests/test_tracking.py and tests/test_official_test.py.
    params["train"].update(epochs=25, patience=8, seeds=[1])
    params["models"] = {name: params["models"][name] for name in TINY_MODELS}
    # ~50 training utterances per fold: small batches give NMER enough steps to learn.
    params["models"]["nmer"].update(
        pretrain={"epochs": 10, "decay_epochs": 4, "batch_size": 8},
        train={"epochs": 12, "decay_epochs": 4, "batch_size": 8},
    )
    # VAT: a small model, a few epochs of alignment pretraining (the pool counts), short
    # fine-tuning with distillation.
    params["models"]["vat"].update(
        hidden_dim=32,
        options={"heads": 2, "video_layers": 1, "audio_layers": 1, "max_frames": 16,
                 "queue_size": 64},
        pretrain={"epochs": 3, "batch_size": 16},
        train={"epochs": 15, "batch_size": 16, "patience": 6},
    )  # fmt: skip
    params["models"] = {name: params["models"][name] for name in models}
    params["corrupt"]["conditions"] = TINY_CONDITIONS
    if folder is not None:  # a second dataset, and the built-in models scored on it
        params["datasets"] = ["builtin", "folder"]
        params["acquire"]["folder"] = {"path": str(folder), "n_folds": 3}
        params["cross_corpus"]["label_maps"]["folder"] = {c: c for c in ("sad", "happy", "angry")}
        params["cross_corpus"]["evaluations"] = {
            "builtin_on_folder": {"train": "builtin", "test": "folder", "models": ["audio_mlp"]}
        }
    return params


def project_copy(
    dest: Path, two_datasets: bool = False, models: tuple[str, ...] = TINY_MODELS
) -> Path:
    """Copy what git would ship (tracked and untracked-but-not-ignored files) and commit it."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    folder = None
    if two_datasets:  # outside the project: a user's copy of their corpus
        folder = build_folder(
            dest.parent / f"{dest.name}-folder", FOLDER_SPEAKERS, text_column=False
        )
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(folder, models), sort_keys=False))
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    run(["git", "init", "-q"], dest)
    run([*git, "add", "-A"], dest)
    run([*git, "commit", "-qm", "tiny copy"], dest)
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("MLFLOW_TRACKING_URI", None)  # each copy logs to its own sqlite:///mlflow.db
    e.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        GX_ANALYTICS_ENABLED="false",
        ROBUSTMER_NO_PROGRESS="1",
    )
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 1800) -> str:
    """Run a command in the copy; fail with its output and logs. The timeout only catches a
    hang: a full `dvc repro` takes about 6 minutes here and CI machines can be twice as slow."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode:
        logs = (
            "".join(
                f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((cwd / "logs").rglob("*.log"))
            )
            if (cwd / "logs").is_dir()
            else ""
        )
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}{logs}")
    return out


def metrics(root: Path, dataset: str = "builtin") -> dict[str, dict]:
    """`model/condition` -> that evaluation's metrics JSON."""
    folder = root / "results" / dataset / "metrics"
    return {
        p.relative_to(folder).with_suffix("").as_posix(): json.loads(p.read_text())
        for p in folder.glob("*/*.json")
    }


def ua(got: dict[str, dict], model: str, condition: str, level: str) -> float:
    return got[f"{model}/{condition}"]["levels"][level]["ua"]


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory.mktemp("dvc"), two_datasets=True)
    run(["dvc", "repro"], root)
    return root


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(
        tmp_path_factory.mktemp("snakemake"), two_datasets=True, models=SNAKEMAKE_MODELS
    )
    run(["snakemake", "--cores", "2"], root)
    return root


def test_dvc_repro_runs_everything(dvc_run: Path) -> None:
    got = metrics(dvc_run)
    assert sorted(got) == sorted(f"{m}/{c}" for m in TINY_MODELS for c in TINY_CONDITIONS)
    summary = json.loads((dvc_run / "results/builtin/validation.json").read_text())
    assert summary["success"] is True
    report = dvc_run / "results/builtin/report"
    assert "## audio_snr" in (report / "summary.md").read_text()
    for condition in TINY_CONDITIONS:
        assert (report / "curves" / f"{condition}.png").stat().st_size > 1000
    assert (dvc_run / "results/builtin/plots/clean/fusion_mlp_confusion.png").stat().st_size > 1000
    assert (dvc_run / "dvc.lock").is_file()
    # Four classes: chance is 0.25; the fusion baseline must be far above it.
    assert ua(got, "fusion_mlp", "clean", "clean") > 0.6, got["fusion_mlp/clean"]
    # NMER, both stages, on the built-in corpus: clearly above chance (0.25) even with ~50
    # training utterances per fold (0.43 here; 0.83 on the default corpus).
    assert ua(got, "nmer", "clean", "clean") > 0.33, got["nmer/clean"]
    assert ua(got, "vat", "clean", "clean") > 0.33, got["vat/clean"]


def test_two_datasets_side_by_side(dvc_run: Path) -> None:
    """Each dataset keeps its own models and results; the audio-only one skips what needs
    video or text, with the reason in its report; the cross-corpus cell scores the built-in
    audio model on the folder's shared classes."""
    got = metrics(dvc_run, "folder")
    assert sorted(got) == sorted(f"{m}/{c}" for m in TINY_MODELS for c in TINY_CONDITIONS)
    assert got["audio_mlp/clean"]["levels"]["clean"]["ua"] >= 0.0
    for model in NEEDS_VIDEO_OR_TEXT:
        summary = json.loads((dvc_run / f"models/folder/{model}/train_summary.json").read_text())
        assert re.search(r"no (video or text|video) features", summary["skipped"]), summary
        assert (dvc_run / f"models/builtin/{model}/train_summary.json").is_file()
    assert "skipped" in got["audio_mlp/video_blur"] and "skipped" in got["audio_mlp/missing_rate"]
    assert got["audio_mlp/audio_snr"]["levels"]  # its one modality is corrupted and scored
    text = (dvc_run / "results/folder/report/summary.md").read_text()
    assert "# Robustness on `folder`" in text and "## Cells without scores" in text
    cross = json.loads((dvc_run / "results/cross_corpus/builtin_on_folder.json").read_text())
    assert cross["shared_classes"] == ["happy", "angry", "sad"]
    assert 0.0 <= cross["models"]["audio_mlp"]["clean"]["clean"]["ua"] <= 1.0
    table = (dvc_run / "results/cross_corpus/builtin_on_folder/scores.csv").read_text()
    assert table.startswith("train_dataset,test_dataset,model,condition,level")
    results = (dvc_run / "results/folder/report/results.csv").read_text()
    assert results.startswith("train_dataset,test_dataset,model,condition,level")


def test_accuracy_falls_as_data_degrades(dvc_run: Path) -> None:
    got = metrics(dvc_run)
    for model in ("fusion_mlp",):
        clean = ua(got, model, "clean", "clean")
        assert ua(got, model, "missing_rate", "0") == clean
        assert ua(got, model, "missing_rate", "0.6") < clean - 0.05
        assert ua(got, model, "video_blur", "1") == clean  # rate 1 is the identity
    # Common random numbers: NMER's stochastic evaluation gives identical scores on identical
    # inputs, whatever the condition.
    nmer = ua(got, "nmer", "clean", "clean")
    assert ua(got, "nmer", "missing_rate", "0") == ua(got, "nmer", "video_blur", "1") == nmer
    audio = ua(got, "audio_mlp", "clean", "clean")
    assert ua(got, "audio_mlp", "audio_snr", "-5") < ua(got, "audio_mlp", "audio_snr", "20")
    assert ua(got, "audio_mlp", "audio_snr", "-5") < audio - 0.05
    assert ua(got, "audio_mlp", "video_blur", "4") == audio  # not its modality
    records = dvc_run / "data/corrupted/builtin/missing_rate/records.parquet"
    import pandas as pd

    rec = pd.read_parquet(records)
    kept = rec[[f"present_{m}" for m in ("audio", "video", "text")]].sum(axis=1)
    assert kept.min() >= 1


def test_dvc_rerun_is_a_no_op(dvc_run: Path) -> None:
    status = run(["dvc", "status"], dvc_run)
    assert "up to date" in status, status
    out = run(["dvc", "repro"], dvc_run)
    assert "Running stage" not in out, out


def test_mlflow_run_per_model_with_lineage_tags(dvc_run: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{dvc_run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustmer")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    parents = [r for r in parents if r.data.params.get("dataset", "builtin") == "builtin"
               or r.info.run_name == "cross-corpus-builtin_on_folder"]  # fmt: skip
    assert sorted(r.info.run_name for r in parents) == sorted(
        [*TINY_MODELS, "nmer-pretrain", "vat-pretrain", "report", "cross-corpus-builtin_on_folder"]
    )  # fmt: skip
    parents = [r for r in parents if r.info.run_name in TINY_MODELS]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=dvc_run, capture_output=True, text=True
    ).stdout.strip()
    for parent in parents:
        tags = parent.data.tags
        assert tags["mlflow.source.git.commit"] == commit
        assert tags["robustmer.git_dirty"] in ("true", "false")
        assert len(tags["robustmer.features_hash"]) == 64
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 3  # one nested run per fold and training seed


def test_snakemake_matches_dvc(dvc_run: Path, snakemake_run: Path) -> None:
    import pandas as pd

    for dataset in ("builtin", "folder"):
        got = metrics(snakemake_run, dataset)
        assert sorted(got) == sorted(f"{m}/{c}" for m in SNAKEMAKE_MODELS for c in TINY_CONDITIONS)
        assert got == {k: v for k, v in metrics(dvc_run, dataset).items() if k in got}
        table = f"results/{dataset}/report/results.csv"
        dvc_rows = pd.read_csv(dvc_run / table)
        dvc_rows = dvc_rows[dvc_rows["model"].isin(SNAKEMAKE_MODELS)].reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.read_csv(snakemake_run / table), dvc_rows)
    for rel in (
        "results/builtin/validation.json",
        "results/builtin/predictions/clean/fusion_mlp.csv",
        "results/builtin/scores/fusion_mlp/audio_snr.csv",
        "results/cross_corpus/builtin_on_folder.json",
        "results/cross_corpus/builtin_on_folder/scores.csv",
    ):
        assert (snakemake_run / rel).read_text() == (dvc_run / rel).read_text(), rel
    dry = run(["snakemake", "-n"], snakemake_run)
    assert "Nothing to be done" in dry, dry


def test_fresh_clone_pulls_an_up_to_date_pipeline(dvc_run: Path, tmp_path: Path) -> None:
    """docs/remote.md: push to a directory remote; a clone + scripts/after-pull.sh reruns nothing.

    Placed before the experiment test on purpose: that one leaves outputs and params that no
    longer match dvc.lock, and this one needs the consistent state `dvc repro` left.
    """
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], dvc_run)
    run([*git, "add", "dvc.lock", ".dvc/config"], dvc_run)
    # cache: false metrics are not pushed, so git carries them; /results/ is git-ignored.
    tracked = [
        *(f"results/{ds}/{p}" for ds in ("builtin", "folder")
          for p in ("validation.json", "metrics", "robustness.json")),
        "results/cross_corpus/builtin_on_folder.json",
    ]  # fmt: skip
    run([*git, "add", "-f", *tracked], dvc_run)
    run([*git, "commit", "-qm", "results"], dvc_run)
    run(["dvc", "push"], dvc_run)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_run), str(clone)], tmp_path)

    # A change DVC sees: the script pulls but must not touch, or Snakemake would record the
    # edited params as the ones that produced the pulled outputs.
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["seed"] += 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = subprocess.run(
        ["bash", "scripts/after-pull.sh"], cwd=clone, env=env(), capture_output=True, text=True
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "DVC reports changes" in refused.stderr, refused.stderr
    assert not (clone / ".snakemake").exists()
    run(["git", "checkout", "params.yaml"], clone)

    run(["bash", "scripts/after-pull.sh"], clone)
    status = run(["dvc", "status"], clone)
    assert "up to date" in status, status
    repro = run(["dvc", "repro"], clone)
    assert "Running stage" not in repro, repro
    dry = run(["snakemake", "-n"], clone)
    assert "Nothing to be done" in dry, dry
    assert "missing provenance" not in dry, dry  # --forceall recorded every job
    for rel in ("results/builtin/report/results.csv", "models/builtin/fusion_mlp/seed_1/fold_0.pt"):
        assert (clone / rel).read_bytes() == (dvc_run / rel).read_bytes(), rel


def test_dvc_experiment_tags_its_mlflow_runs(dvc_run: Path, snakemake_run: Path) -> None:
    """Last on purpose: the experiment rewrites the DVC copy's outputs."""
    import mlflow

    run(["dvc", "exp", "run", "-S", "train.lr=0.002", "-n", "lr-test", "train@builtin-fusion_mlp"],
        dvc_run)  # fmt: skip
    assert "lr-test" in run(["dvc", "exp", "list"], dvc_run)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{dvc_run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustmer")
    tagged = client.search_runs(
        [exp.experiment_id], filter_string="tags.`robustmer.dvc_exp_name` = 'lr-test'"
    )
    parents = [r for r in tagged if "mlflow.parentRunId" not in r.data.tags]
    assert {r.info.run_name for r in parents} == {"fusion_mlp"}
    assert {r.data.params["train.lr"] for r in parents} == {"0.002"}
