"""Frame-level image embeddings (CLIP and similar) from a local Hugging Face model, MER2024 style.

`frames` frames are sampled uniformly over each clip (0 = every frame); with `face` on, each is
cropped to the face found by the same Haar detector and fallbacks as face_hog (the last box, then
a centre crop), else the whole frame is used. A CLIP model gives its projected image embedding
(`get_image_features`); a vision-only model gives its pooled output. The utterance feature is
the mean of the frames, which the store derives, so only the frame output is declared.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustmer.errors import ConfigError
from robustmer.features.base import Extractor, OutputSpec
from robustmer.features.faces import FaceFinder, FaceStats, FaceTrack, crop
from robustmer.features.kinds import kind_defaults
from robustmer.features.media import (
    check_options,
    is_bool,
    is_int,
    local_model_dir,
    model_description,
    read_frames,
    video_fps,
)


class HFImageExtractor(Extractor):
    """`video/<name>`: one `[D]` image embedding per used frame."""

    modality = "video"
    kind = "hf_image"
    defaults: ClassVar[dict[str, Any]] = kind_defaults("hf_image")  # declared in kinds.py
    fps: float | None = None  # for the frame rate when every frame is used (frames 0)

    def __init__(self, name: str, cfg: dict[str, Any], device: str = "cpu"):
        super().__init__(name, cfg, device)
        check_options(
            self,
            {
                "frames": (is_int(0), "an integer >= 0 (0 = every frame)"),
                "face": (is_bool, "true or false"),
                "batch_size": (is_int(1), "an integer >= 1 (frames per forward pass)"),
            },
        )
        self.model_dir = local_model_dir(self.cfg["model_path"], f"extract.video.{name}")
        self._stats = FaceStats()

    def setup(self) -> None:
        import cv2
        import torch
        from transformers import AutoImageProcessor, AutoModel

        cv2.setNumThreads(1)
        where, path = f"extract.video.{self.name}.model_path", str(self.model_dir)
        torch.manual_seed(0)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        if getattr(self._model, "main_input_name", "") != "pixel_values" and not hasattr(
            self._model, "get_image_features"
        ):
            raise ConfigError(
                f"{where}: {path} holds a {self._model.config.model_type!r} model, not an image "
                "model (CLIP, SigLIP, a ViT / CLIP vision tower)"
            )
        try:
            self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except OSError as exc:
            raise ConfigError(
                f"{where}: {path} has no image processor (preprocessor_config.json); save the "
                "model's processor into the folder with save_pretrained()"
            ) from exc
        self._finder = FaceFinder() if self.cfg["face"] else None
        self._dim = int(self.embed([np.zeros((32, 32, 3), np.uint8)]).shape[1])

    def version(self) -> str:
        import cv2
        import torch
        import transformers

        # transformers picks the torchvision image processor when torchvision is installed, the
        # PIL one otherwise; their resizing differs slightly, so the backend is part of the key
        backend = "torchvision" if importlib.util.find_spec("torchvision") else "pil"
        return (
            f"transformers {transformers.__version__} ({backend} images); torch "
            f"{torch.__version__}; opencv {cv2.__version__}; {model_description(self.model_dir)}"
        )

    def probe(self, items: Sequence[Path]) -> None:
        if items:
            self.fps = video_fps(items[0])

    def outputs(self) -> list[OutputSpec]:
        rate = self.fps if self.cfg["frames"] == 0 and self.fps else None
        return [OutputSpec("", "frame", self._dim, rate)]

    def stats(self) -> dict[str, float]:
        """Face-detection counts over the clips this instance (this process) has extracted."""
        return self._stats.as_dict()

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """`[N, D]` embeddings of RGB uint8 images, `batch_size` at a time."""
        import torch

        out = []
        for start in range(0, len(images), self.cfg["batch_size"]):
            batch = list(images[start : start + self.cfg["batch_size"]])
            pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                pixels = pixels.to(self.device)
                if hasattr(self._model, "get_image_features"):
                    result = self._model.get_image_features(pixel_values=pixels)
                else:
                    result = self._model(pixel_values=pixels)
                if not isinstance(result, torch.Tensor):  # transformers 5: a model output
                    pooled = getattr(result, "pooler_output", None)
                    result = pooled if pooled is not None else result.last_hidden_state.mean(1)
            out.append(result.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def crops(self, path: Path) -> list[np.ndarray]:
        """The clip's used frames as RGB images, face crops when `face` is on."""
        import cv2

        frames, fps = read_frames(path, self.cfg["frames"])
        if self.fps is None:
            self.fps = fps
        images = []
        track = FaceTrack(self._finder) if self._finder is not None else None
        for frame in frames:
            if track is not None:
                frame = crop(frame, track.box_for(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)))
            images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if track is not None:
            self._stats.add(track)
        return images

    def extract(self, items: Sequence[Path]) -> list[dict[str, np.ndarray]]:
        return [{"": self.embed(self.crops(Path(path)))} for path in items]
