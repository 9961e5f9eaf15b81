"""dvc.yaml and the Snakefile define the same stages, commands and outputs; lint stays clean."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustmer import paths, stage_code
from robustmer.config import load_params
from robustmer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
REDIRECT = re.compile(r"\s*>\s*\S+\s+2>&1\s*$")


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def dvc_stages(root: Path = ROOT) -> dict[str, tuple[str, set[str]]]:
    """cmd -> (stage name, outputs) from dvc.yaml, with foreach/matrix expanded by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.cmd: (s.name, {str(o.def_path) for o in s.outs}) for s in repo.index.stages}


def snakemake_jobs(root: Path = ROOT) -> dict[str, tuple[str, set[str]]]:
    """cmd -> (rule, outputs) for every job of a forced dry run (`snakemake -n -p --forceall`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall"],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs: dict[str, tuple[str, set[str]]] = {}
    rule, outs = "", set()
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            rule, outs = m.group(1), set()
        elif line.startswith("output: "):
            outs = {o.strip() for o in line[len("output: ") :].split(",")}
        elif line.startswith("Shell command: ") and line != "Shell command: None":
            jobs[REDIRECT.sub("", line[len("Shell command: ") :]).strip()] = (rule, outs)
    return jobs


def assert_same_jobs(root: Path) -> dict[str, tuple[str, set[str]]]:
    # DVC alone has the `code` stage: Snakemake rules take the source files themselves as
    # inputs (mtimes), DVC stages one listing of their hashes (robustmer.stage_code).
    dvc = {cmd: job for cmd, job in dvc_stages(root).items() if job[0] != "code"}
    snake = snakemake_jobs(root)
    assert len(snake) >= 7
    assert set(dvc) == set(snake), sorted(set(dvc) ^ set(snake))
    for cmd, (stage, outs) in dvc.items():
        rule, snake_outs = snake[cmd]
        assert stage.split("@")[0] == rule, cmd
        assert outs == snake_outs, (cmd, outs, snake_outs)
    return dvc


def test_same_commands_and_outputs() -> None:
    assert_same_jobs(ROOT)


def test_evaluate_and_train_jobs_reserve_the_cores_their_workers_use() -> None:
    """Both run `train.workers` processes of `num_threads` threads: Snakemake reserves that many
    cores for each (the dry run prints `threads: N` when N > 1)."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    reserved: dict[tuple[str, str], int] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        model = re.search(r"wildcards: .*model=(\w+)", block)
        if rule and model and rule.group(1) in ("train", "evaluate"):
            threads = re.search(r"^\s+threads: (\d+)", block, re.M)
            reserved[rule.group(1), model.group(1)] = int(threads.group(1)) if threads else 1
    params = load_params(ROOT / "params.yaml")
    assert params["train"]["workers"] == 2
    for model in params["models"]:
        assert reserved["evaluate", model] == reserved["train", model], model
    assert reserved["evaluate", "fusion_mlp"] == 2  # 2 workers x 1 thread


def expected_outputs(params: dict) -> set[str]:
    """Every output path.py names for the params' datasets, models, conditions and cross cells."""
    expected: set[Path] = set()
    conditions = params["corrupt"]["conditions"]
    for ds in params["datasets"]:
        expected |= {
            paths.raw_dir(ds),
            paths.feature_dir(ds),
            paths.validation_summary(ds),
            paths.data_docs_dir(ds),
            paths.report_dir(ds),
            paths.robustness_metrics(ds),
        }
        expected |= {paths.corrupted_dir(ds, c) for c in conditions}
        for model in params["models"]:
            expected |= {paths.model_dir(ds, model), paths.pretrain_dir(ds, model),
                         paths.tune_dir(ds, model), paths.tuned_file(ds, model)}  # fmt: skip
            for c in conditions:
                expected |= {
                    paths.metrics_file(ds, model, c),
                    paths.scores_file(ds, model, c),
                    paths.predictions_file(ds, model, c),
                    paths.confusion_png(ds, model, c),
                    paths.confusion_csv(ds, model, c),
                }
    for name in params["cross_corpus"]["evaluations"]:
        expected |= {paths.cross_corpus_dir(name), paths.cross_corpus_metrics(name)}
    return {p.as_posix() for p in expected}


def test_every_dvc_params_key_is_in_params_yaml() -> None:
    """Each `params:` entry of dvc.yaml names a key of params.yaml (a mis-indented list item
    becomes one odd name such as "acquire - protocol", which `dvc repro` refuses)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        for key in stage.get("do", stage).get("params", []):
            node: object = params
            for part in str(key).split("."):
                if "${" in part:  # a templated key (models.${item.model}): its parent exists
                    break
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{name}: {key}")
                    break
                node = node[part]
    assert not missing, missing


def test_outputs_follow_the_paths_module() -> None:
    params = load_params(ROOT / "params.yaml")
    outs = {o for _, stage_outs in dvc_stages().values() for o in stage_outs}
    listings = {f"{stage_code.LISTINGS.as_posix()}/{kind}.txt" for kind in stage_code.STAGES}
    assert outs == expected_outputs(params) | listings


def test_two_datasets_and_a_cross_corpus_cell_in_both_front_doors(tmp_path: Path) -> None:
    """Several datasets: every stage per dataset, outputs keyed by it, the same jobs in DVC and
    Snakemake, and a cross-corpus cell that reads the one dataset's models and the other's data."""
    for rel in ("dvc.yaml", "Snakefile", "workflow", "src"):
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, tmp_path / rel)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"] = ["builtin", "emodb"]
    raw["models"] = {m: raw["models"][m] for m in ("audio_mlp", "linear", "nmer")}
    raw["corrupt"]["conditions"] = {"clean": {"kind": "clean"}}
    raw["cross_corpus"]["evaluations"] = {
        "builtin_on_emodb": {"train": "builtin", "test": "emodb", "models": ["audio_mlp"]}
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True,
                   env=_env())  # fmt: skip
    dvc = assert_same_jobs(tmp_path)
    outs = {o for _, stage_outs in dvc.values() for o in stage_outs}
    assert outs == expected_outputs(load_params(tmp_path / "params.yaml"))
    stages = {stage for stage, _ in dvc.values()}
    assert {"train@builtin-nmer", "train@emodb-nmer", "cross_corpus@builtin_on_emodb",
            "tune@emodb-audio_mlp"} <= stages  # fmt: skip
    assert "robustmer train nmer --dataset emodb" in dvc
    assert "robustmer cross-corpus builtin_on_emodb" in dvc


@pytest.mark.parametrize(
    "cmd", [["snakemake", "--lint"], ["snakefmt", "--check", "Snakefile", "workflow/rules"]]
)
def test_workflow_lints_clean(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


# --- code deps: every module a stage's command imports is a declared dependency -------------

SRC = ROOT / "src"
# Packages whose modules are imported by name at run time (method packages through
# models.registry, extractor kinds through features.registry): importing the registry means
# depending on the whole package.
DYNAMIC = {"robustmer.models.registry": "robustmer.models",
           "robustmer.features.registry": "robustmer.features",
           "robustmer.data.registry": "robustmer.data.adapters"}  # fmt: skip


def _module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """robustmer modules `path` imports, at any depth of the file except `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "robustmer" and _module_file(m)}


def import_closure(*roots: str) -> set[Path]:
    """Every robustmer source file the modules `roots` load, with their parent packages."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent __init__ runs
        if name in DYNAMIC:
            pkg = DYNAMIC[name]
            todo += [
                f"{pkg}.{'.'.join(p.relative_to(_module_file(pkg).parent).with_suffix('').parts)}"
                for p in _module_file(pkg).parent.rglob("*.py")
                if p.name != "__init__.py"
            ] + [pkg]
        path = _module_file(name)
        if path is not None:
            todo += sorted(_imports(path, name))
    return {p for n in seen if (p := _module_file(n)) is not None}


def stage_entry_modules(stage: str) -> set[str]:
    """The modules `robustmer <stage>` imports: the CLI's top level and its command function.

    cli.py itself is not required as a dep: it only parses arguments and maps errors to exit
    codes, and depending on it would rerun every stage when any command's help text changes.
    """
    tree = ast.parse((SRC / "robustmer" / "cli.py").read_text())
    top = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robustmer")
    }
    top |= {f"robustmer.{a.name}" for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.module == "robustmer" for a in node.names}  # fmt: skip
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == stage:
            inner = {
                n.module
                for n in ast.walk(node)
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("robustmer")
            }
            return top | inner
    raise AssertionError(f"cli.py has no command function {stage!r}")


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def dvc_code_deps() -> dict[str, list[str]]:
    """stage -> the src/ paths of the code listing it depends on (data/code/<kind>.txt)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        deps = stage.get("do", stage).get("deps", [])
        if name == "code":
            continue
        assert not [d for d in deps if d.startswith("src/")], f"{name}: src/ deps bypass data/code"
        listed = [d for d in deps if d.startswith(f"{stage_code.LISTINGS.as_posix()}/")]
        assert len(listed) == 1, f"{name}: one code listing dep, not {listed}"
        kind = Path(listed[0]).stem
        out[name] = [f"{stage_code.PACKAGE.as_posix()}/{p}" for p in stage_code.parts(kind)]
    return out


def snakemake_code_deps() -> dict[str, list[str]]:
    """rule -> the src/ paths of its `code=code("<kind>")` input."""
    out: dict[str, list[str]] = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            if call := re.search(r'code=code\("(\w+)"\)', body):
                parts = stage_code.parts(call.group(1))
                out[rule] = [f"{stage_code.PACKAGE.as_posix()}/{p}" for p in parts]
    return out


def test_the_code_stage_writes_every_listing_and_depends_on_all_sources() -> None:
    code = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["code"]
    assert code["deps"] == [stage_code.PACKAGE.as_posix()]
    # Cached (the default), so that `dvc push` / `dvc pull` carry them with the other outputs.
    assert code["outs"] == [f"{stage_code.LISTINGS.as_posix()}/{k}.txt" for k in stage_code.STAGES]


def test_a_code_listing_changes_only_with_its_stages_files(tmp_path: Path) -> None:
    shutil.copytree(SRC / "robustmer", tmp_path / "src" / "robustmer",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    assert stage_code.write_listings(tmp_path) == list(stage_code.STAGES)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / stage_code.LISTINGS).iterdir()}
    assert stage_code.write_listings(tmp_path) == []  # nothing changed, nothing rewritten
    report = tmp_path / "src/robustmer/evaluation/report.py"
    report.write_text(report.read_text() + "\n# edited\n")
    assert stage_code.write_listings(tmp_path) == ["evaluate", "cross_corpus", "report"]
    listing = (tmp_path / stage_code.LISTINGS / "report.txt").read_text()
    digest = hashlib.sha256(report.read_bytes()).hexdigest()
    assert f"{digest}  src/robustmer/evaluation/report.py\n" in listing
    train = tmp_path / stage_code.LISTINGS / "train.txt"
    assert train.stat().st_mtime_ns == before["train.txt"]
    (tmp_path / "src/robustmer/cli.py").write_text("# the CLI is no stage's code\n")
    assert stage_code.write_listings(tmp_path) == []
    (tmp_path / "src/robustmer/paths.py").unlink()
    with pytest.raises(ConfigError, match=r"src/robustmer/paths.py: the acquire stage's code"):
        stage_code.write_listings(tmp_path)
    assert (tmp_path / stage_code.LISTINGS / "acquire.txt").read_text()  # earlier ones kept


@pytest.mark.parametrize("front", ["dvc", "snakemake"])
def test_code_deps_cover_every_imported_module(front: str) -> None:
    deps = dvc_code_deps() if front == "dvc" else snakemake_code_deps()
    stages = (
        "acquire",
        "extract",
        "validate",
        "corrupt",
        "tune",
        "pretrain",
        "train",
        "evaluate",
        "report",
        "cross_corpus",
    )
    assert set(stages) <= set(deps), sorted(deps)
    problems = {}
    for stage in stages:
        files = import_closure(*stage_entry_modules(stage))
        missing = sorted(p.relative_to(ROOT).as_posix() for p in files
                         if not _covered(p, deps[stage]))  # fmt: skip
        if missing:
            problems[stage] = missing
    assert not problems, f"{front}: code deps lack modules their stage imports: {problems}"


def test_import_closure_sees_function_level_and_dynamic_imports() -> None:
    files = {p.relative_to(SRC).as_posix() for p in import_closure("robustmer.training.runner")}
    assert "robustmer/training/loop.py" in files  # a module-level import
    assert "robustmer/models/nmer/network.py" in files  # loaded through models.registry
    assert "robustmer/tracking/lineage.py" in files
    assert "robustmer/evaluation/report.py" not in files
