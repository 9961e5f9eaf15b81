"""Stage `acquire`: put the configured corpus into data/raw/<dataset>/.

Only the built-in corpus is generated here; adapters for real corpora plug in by dataset name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustmer.errors import DataError
from robustmer.seeding import derive_seed

KNOWN_DATASETS = ("builtin",)


def acquire(params: dict[str, Any], out_dir: Path) -> Path:
    """Acquire params["dataset"] into `out_dir` and return `out_dir`."""
    dataset = params["dataset"]
    out_dir = Path(out_dir)
    if dataset == "builtin":
        from robustmer.data.builtin import generate_corpus

        generate_corpus(
            out_dir,
            params["acquire"]["builtin"],
            seed=derive_seed(params["seed"], "acquire", "builtin"),
            workers=params["extract"]["workers"],
        )
        return out_dir
    raise DataError(
        f"unknown dataset {dataset!r} in params.yaml; known datasets: {', '.join(KNOWN_DATASETS)}"
    )
