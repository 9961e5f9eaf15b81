"""The built-in synthetic tri-modal corpus: speech, a talking face and transcripts from a seed.

`generate_corpus` renders it (docs/builtin_corpus.md describes the generative model); nothing is
downloaded, and the same seed and cfg always give the same files.
"""

from robustmer.data.builtin.generate import GENERATOR_VERSION, generate_corpus

__all__ = ["GENERATOR_VERSION", "generate_corpus"]
