# Shared definitions: config validation against the same schema the CLI uses, names and paths.
import functools
from pathlib import Path

from snakemake.utils import validate

from robustmer import stage_code
from robustmer.config import expand_presets, project_datasets, validate_params
from robustmer.models.registry import check_models

# Model presets (models.<m>.preset) are expanded exactly as the CLI does before validating;
# each model entry is checked against its method (options, task) before any job runs.
config.update(expand_presets(config))
validate(config, schema="../../src/robustmer/resources/params.schema.yaml")
check_models(validate_params(config), "config")

# Every stage runs per dataset: paths carry {dataset} as dvc.yaml's matrix carries
# ${item.dataset} (src/robustmer/paths.py).
DATASETS = project_datasets(config)
MODELS = sorted(config["models"])
CONDITIONS = sorted(config["corrupt"]["conditions"])
CROSS = config.get("cross_corpus", {}).get("evaluations", {})
RAW = "data/raw/{dataset}"
FEATURES = "data/features/{dataset}"
VALIDATION_SUMMARY = "results/{dataset}/validation.json"
DATA_DOCS = "results/{dataset}/data_docs"
CORRUPTED = "data/corrupted/{dataset}"
REPORT = "results/{dataset}/report"


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    condition="|".join(CONDITIONS),
    cross="|".join(CROSS) or "(?!)",


def code(stage):
    """Source files the rule's command runs, so that a code change reruns it: the table dvc.yaml's
    code listings come from (src/robustmer/stage_code.py), which tests/test_workflow_parity.py
    checks against the modules each stage imports.
    """
    return [str(p) for p in stage_code.files(stage)]


# Cheap or network-bound rules run in the Snakemake process itself (the login node on a
# cluster) instead of being submitted: downloads need the network compute nodes often lack,
# and validation and the report take seconds.
localrules:
    all,
    acquire,
    validate,
    report,


# Without a search (tune.models empty) every tune job only writes an empty result: local too.
# With one, the searches go to the cluster, and so do the other models' empty results.
if not config["tune"]["models"]:

    localrules:
        tune,


def threads_of(model, stage="train"):
    """A model's CPU threads: num_threads per unit times the workers that train units side by
    side (train.workers), each from its own train/pretrain override, else the train section.
    """
    entry = config["models"][model].get(stage) or {}
    threads = entry.get("num_threads", config["train"]["num_threads"])
    return threads * entry.get("workers", config["train"]["workers"])


def local_gpus():
    """1 when training would run on CUDA here, else 0.

    With `--resources gpu=1` (as in the default profile) local GPU jobs run one at a time, while
    CPU-only runs declare 0 and stay parallel. Cluster profiles set `gpu` per rule themselves.
    """
    device = config["device"]
    if device != "auto":
        return int(device.startswith("cuda"))
    return int(_cuda_available())


@functools.cache
def _cuda_available():
    import torch  # only when a training job is scheduled: torch takes seconds to import

    return torch.cuda.is_available()
