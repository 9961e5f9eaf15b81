"""The dataset's evaluation protocol as files: explicit per-fold roles and official splits.

Light on purpose (pandas only): validation, training and evaluation all read the protocol, and
none of them should pull in torch or MLflow to do it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from robustmer.errors import DataError

PROTOCOL_FILE = "protocol.parquet"
ROLES = ("train", "val", "test")
SPLITS = ("train", "valid", "test")
# The true label of a row that a corpus put into its unlabelled pool on purpose (the built-in
# corpus): for scoring pseudo-labels only, never for training.
WITHHELD_COLUMN = "withheld_label"


def read_roles(root: Path) -> pd.DataFrame | None:
    """The store's explicit per-fold protocol, if it has one."""
    path = Path(root) / PROTOCOL_FILE
    if not path.is_file():
        return None
    roles = pd.read_parquet(path)
    missing = {"sample_id", "fold", "role"} - set(roles.columns)
    if missing:
        raise DataError(f"{path}: lacks columns {sorted(missing)}; rebuild the store")
    bad = sorted(set(roles["role"].astype(str)) - set(ROLES))
    if bad:
        raise DataError(f"{path}: unknown roles {bad}; expected {list(ROLES)}")
    return roles
