"""robustmer: multimodal emotion recognition that stays accurate under noise and missing data."""

__version__ = "0.1.0"

CLASSES_BUILTIN = ("neutral", "happy", "angry", "sad")
MODALITIES = ("audio", "video", "text")
