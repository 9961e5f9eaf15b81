"""Transcripts built from templates and the word lists in lexicon.yaml.

A transcript is an emotion-free topic clause, optionally joined to a cue clause: a strong or mild
cue of the utterance's own class, a weak cue that only says good or bad (the same for angry and
sad), a (mild) cue of another class (contradictory), or none. Topic
and template are drawn independently of the class, so only the cue carries emotion.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from robustmer.data.builtin.design import Utterance


@lru_cache(maxsize=1)
def lexicon() -> dict[str, Any]:
    text = resources.files("robustmer.data.builtin").joinpath("lexicon.yaml").read_text("utf-8")
    return yaml.safe_load(text)


VALENCE_OF = {"happy": "positive", "angry": "negative", "sad": "negative"}


def cue_phrases(label: str, strength: str) -> list[str]:
    """The cue clauses of a class at `strength` ("strong", "mild" or "weak")."""
    lex = lexicon()
    if strength == "weak" and label in VALENCE_OF:
        return list(lex["valence_cues"][VALENCE_OF[label]])
    if strength == "weak":  # a neutral utterance has no valence to hint at
        strength = "mild"
    return list(lex["cues"][label][strength])


def _capitalise(text: str) -> str:
    text = re.sub(r"\bi\b", "I", text)
    text = re.sub(r"([.:!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text[:1].upper() + text[1:]


def make_transcript(utt: Utterance, rng: np.random.Generator) -> str:
    lex = lexicon()
    topic = str(rng.choice(lex["topics"]))
    if utt.text_cue == "none":
        return _capitalise(str(rng.choice(lex["plain"])).format(topic=topic))
    strength = "mild" if utt.text_cue == "contradictory" else utt.text_cue
    cue = str(rng.choice(cue_phrases(utt.text_cue_class, strength)))
    template = str(rng.choice(lex["templates"]))
    return _capitalise(template.format(topic=topic, cue=cue))
