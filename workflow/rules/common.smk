# Shared definitions: config validation against the same schema the CLI uses, names and paths.
from pathlib import Path

from snakemake.utils import validate

from robustmer.config import expand_presets

# Model presets (models.<m>.preset) are expanded exactly as the CLI does before validating.
config.update(expand_presets(config))
validate(config, schema="../schemas/params.schema.yaml")

DATASET = config["dataset"]
MODELS = sorted(config["models"])
CONDITIONS = sorted(config["corrupt"]["conditions"])
RAW = f"data/raw/{DATASET}"
FEATURES = f"data/features/{DATASET}"
VALIDATION_SUMMARY = f"results/validation/{DATASET}.json"
DATA_DOCS = f"results/validation/{DATASET}_data_docs"
CORRUPTED = f"data/corrupted/{DATASET}"
REPORT = f"results/report/{DATASET}"


wildcard_constraints:
    model="|".join(MODELS),
    condition="|".join(CONDITIONS),


def code(*parts):
    """Source files a rule runs, so that code changes rerun it (as DVC's code deps do)."""
    files = []
    for part in parts:
        path = Path("src/robustmer") / part
        files += (
            sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            )
            if path.is_dir()
            else [str(path)]
        )
    return files


localrules:
    all,
    report,


def threads_of(model, stage="train"):
    """A model's CPU threads: its own train/pretrain override, else train.num_threads."""
    entry = config["models"][model].get(stage) or {}
    return entry.get("num_threads", config["train"]["num_threads"])
