"""Extractor kinds: which class implements each `kind` of params.yaml `extract.<modality>.<name>`.

Classes are named by dotted path and imported only when an entry uses them, so the stage (and
the schema check) works without the heavy libraries of kinds nobody configured. Each kind's
options (with their defaults) are declared here too, not on the class: loading params checks
option names for every stage without importing any extractor module.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from robustmer.errors import ConfigError

if TYPE_CHECKING:
    from robustmer.features.base import Extractor

MODALITIES = ("audio", "video", "text")


@dataclass(frozen=True)
class Kind:
    modality: str
    target: str  # "package.module:Class"
    torch: bool = False  # runs a torch model: on a GPU it runs in the main process, batched
    options: Mapping[str, Any] = field(default_factory=dict)  # every option -> its default


KINDS: dict[str, Kind] = {
    "opensmile": Kind(
        "audio",
        "robustmer.features.audio:OpenSmileExtractor",
        options={"feature_set": "eGeMAPSv02", "vad": False},
    ),
    "logmel": Kind(
        "audio",
        "robustmer.features.logmel:LogMelExtractor",
        options={"n_mels": 64, "win_ms": 25, "hop_ms": 10, "sample_rate": 16000, "vad": False},
    ),
    "hf_speech": Kind(
        "audio",
        "robustmer.features.hf_speech:HFSpeechExtractor",
        torch=True,
        options={"model_path": None, "chunk_s": 10, "layers": 4, "vad": False},
    ),
    "sentence": Kind(
        "text",
        "robustmer.features.text:SentenceExtractor",
        torch=True,
        options={"model": "minilm", "batch_size": 64, "normalize": True},
    ),
    "hf_text": Kind(
        "text",
        "robustmer.features.hf_text:HFTextExtractor",
        torch=True,
        options={"model_path": None, "layers": 4, "max_length": 512, "batch_size": 16},
    ),
    "face_hog": Kind(
        "video",
        "robustmer.features.video:FaceHogExtractor",
        options={
            "frame_step": 1,
            "frames": 0,
            "crop_size": 32,
            "min_face_size": 24,
            "detect_every": 3,
            "detect_max_side": 320,
            "scale_factor": 1.2,
        },
    ),
    "hf_image": Kind(
        "video",
        "robustmer.features.hf_image:HFImageExtractor",
        torch=True,
        options={"model_path": None, "frames": 8, "face": True, "batch_size": 32},
    ),
}

_OVERRIDES: dict[str, tuple[Kind, type[Extractor]]] = {}


@contextlib.contextmanager
def registered(kind: str, cls: type[Extractor], *, torch: bool = False) -> Iterator[None]:
    """Test hook: make `kind` build `cls` inside the block (fork-started workers inherit it)."""
    previous = _OVERRIDES.get(kind)
    target = f"{cls.__module__}:{cls.__qualname__}"
    _OVERRIDES[kind] = (Kind(cls.modality, target, torch, dict(cls.defaults)), cls)
    try:
        yield
    finally:
        if previous is None:
            _OVERRIDES.pop(kind, None)
        else:
            _OVERRIDES[kind] = previous


def kind_info(kind: str) -> Kind:
    if kind in _OVERRIDES:
        return _OVERRIDES[kind][0]
    if kind not in KINDS:
        raise ConfigError(f"unknown extractor kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[kind]


def kind_defaults(kind: str) -> dict[str, Any]:
    """A kind's options and their defaults (an extractor class's `defaults`)."""
    return dict(KINDS[kind].options)


def extractor_class(kind: str) -> type[Extractor]:
    if kind in _OVERRIDES:
        return _OVERRIDES[kind][1]
    module_name, _, attr = kind_info(kind).target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"extractor kind {kind!r} needs {kind_info(kind).target}, which cannot be imported "
            f"({exc}); install the missing dependency or choose another kind"
        ) from exc
    return cls  # type: ignore[no-any-return]


def build_extractors(cfg: dict[str, Any], modality: str, device: str = "cpu") -> list[Extractor]:
    """The configured (not yet set up) extractors of one modality, in params order.

    `cfg` is the whole `extract` section. Option names are checked by each class (ConfigError
    naming `extract.<modality>.<name>`); here: the kind exists and belongs to the modality, and
    no two entries write the same feature name.
    """
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r} (known: {', '.join(MODALITIES)})")
    out: list[Extractor] = []
    for name, entry in (cfg.get(modality) or {}).items():
        where = f"extract.{modality}.{name}"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"{where}: expected a mapping with a `kind`")
        try:
            info = kind_info(str(entry["kind"]))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if info.modality != modality:
            raise ConfigError(
                f"{where}: kind {entry['kind']!r} extracts {info.modality}, not {modality}; "
                f"move the entry under extract.{info.modality}"
            )
        out.append(extractor_class(str(entry["kind"]))(str(name), dict(entry), device))
    return out


def check_feature_names(modality: str, names: dict[str, list[str]]) -> None:
    """`names`: entry -> the feature names it writes; a name written twice is a ConfigError."""
    seen: dict[str, str] = {}
    for entry, features in names.items():
        for feature in features:
            if feature in seen and seen[feature] != entry:
                raise ConfigError(
                    f"extract.{modality}.{entry} and extract.{modality}.{seen[feature]} both "
                    f"write {modality}/{feature}; rename one of the entries"
                )
            seen[feature] = entry


def uses_torch(ext: Extractor) -> bool:
    return kind_info(ext.kind).torch
