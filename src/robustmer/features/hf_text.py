"""Token-level text features from a local Hugging Face model (BERT, RoBERTa, ...), MER2024 style.

Each token's feature is the sum of the model's last `layers` hidden states; special tokens
([CLS], [SEP], padding) are dropped with the tokenizer's special-tokens mask, so the frames are
the transcript's own tokens and their mean is the MER2024 utterance feature. An empty transcript
gives one zero frame (zeros, as the recipe does, with the one row a frame feature needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from robustmer.errors import ConfigError
from robustmer.features.base import Extractor, OutputSpec
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import check_options, is_int, local_model_dir, model_description
from robustmer.features.text import clean_text, force_offline


class HFTextExtractor(Extractor):
    """`text/<name>`: `[n_tokens, D]` frames per transcript (no fixed frame rate)."""

    modality = "text"
    kind = "hf_text"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("hf_text")  # declared in kinds.py

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "layers": (is_int(1), "an integer >= 1"),
                "max_length": (is_int(2), "an integer >= 2 (tokens, special ones included)"),
                "batch_size": (is_int(1), "an integer >= 1"),
            },
        )
        self.batch_size = self.cfg["batch_size"]
        self.model_dir = local_model_dir(self.cfg["model_path"], f"extract.text.{name}")

    def setup(self) -> None:
        import torch

        force_offline()
        from transformers import AutoModel, AutoTokenizer

        path = str(self.model_dir)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"extract.text.{self.name}.model_path: {path} has no usable tokenizer ({exc}); "
                "save the model's tokenizer into the folder with save_pretrained()"
            ) from exc
        if self._tokenizer.pad_token is None:  # decoder-only models (GPT-2 style) have none
            self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
        torch.manual_seed(0)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        config = self._model.config
        n_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        if n_layers and self.cfg["layers"] > n_layers + 1:
            raise ConfigError(
                f"extract.text.{self.name}.layers = {self.cfg['layers']}: the model has only "
                f"{n_layers + 1} hidden states (embeddings + {n_layers} layers)"
            )
        self._dim = int(config.hidden_size)

    def version(self) -> str:
        import torch
        import transformers

        return (
            f"transformers {transformers.__version__}; torch {torch.__version__}; "
            f"{model_description(self.model_dir)}"
        )

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("", "frame", self._dim)]

    def extract(self, items: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        import torch

        texts = [clean_text(t) for t in items]
        out: list[np.ndarray] = [np.zeros((1, self._dim), np.float32) for _ in texts]
        todo = [i for i, t in enumerate(texts) if t]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            enc = self._tokenizer(
                [texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=self.cfg["max_length"],
                return_special_tokens_mask=True,
                return_tensors="pt",
            )
            special = enc.pop("special_tokens_mask").bool()
            keep = enc["attention_mask"].bool() & ~special
            with torch.no_grad():
                hidden = self._model(
                    **{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True
                ).hidden_states
                summed = torch.stack(hidden[-self.cfg["layers"] :]).sum(0).float().cpu()
            for row, i in enumerate(batch):
                tokens = summed[row][keep[row]].numpy()
                if len(tokens):  # all-special (e.g. only unknown symbols stripped) -> zeros
                    out[i] = tokens.astype(np.float32)
        return [{"": seq} for seq in out]
