"""EmoDB adapter: reads the distributed `wav/03a01Fa.wav` files (speaker, text, emotion, version).

Ten speakers read the same ten sentences, so the folds must be speaker-independent: any split that
shares a speaker measures speaker identification.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from robustmer.data.adapters.raw_layout import (
    SkipLog,
    add_media_columns,
    check_speaker_folds,
    corpus_info,
    option_bool,
    option_int,
    resolve_options,
    round_robin_folds,
    source_dir,
    summary,
    write_raw_corpus,
)
from robustmer.errors import DataError

EMODB_CLASSES = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
_EMODB_NAME = re.compile(r"^(\d{2})([a-z]\d{2})([A-Za-z])([a-z])\.wav$", re.IGNORECASE)
_EMODB_EMOTION = dict(zip("WLEAFTN", EMODB_CLASSES, strict=True))

_EMODB_DEFAULTS: dict[str, Any] = {
    "dataset": "emodb",
    "n_folds": 5,
    "text": False,
    "skip_invalid": False,
}


def prepare_emodb(source: Path, out_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """EmoDB (`wav/03a01Fa.wav`: speaker, text code, emotion letter, version) -> raw layout.

    Speaker-independent folds (speakers sorted, dealt round-robin) because ten speakers read the
    same ten sentences: any split that shares a speaker measures speaker identification.
    """
    opts = resolve_options("emodb", options, _EMODB_DEFAULTS)
    src = source_dir("emodb", source)
    n_folds = option_int("emodb", "n_folds", opts["n_folds"], 2)
    with_text = option_bool("emodb", "text", opts["text"])
    skip_invalid = option_bool("emodb", "skip_invalid", opts["skip_invalid"])
    wav_dir = src / "wav" if (src / "wav").is_dir() else src

    skipped = SkipLog()
    rows = []
    for path in sorted(p for p in wav_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        match = _EMODB_NAME.match(path.name)
        if not match:
            skipped.add(path, "name is not like 03a01Fa.wav (speaker, text, emotion, version)")
            continue
        speaker, text_code, letter, version = match.groups()
        if letter not in _EMODB_EMOTION:
            problem = f"unknown emotion letter {letter!r} (known: {''.join(_EMODB_EMOTION)})"
            if not skip_invalid:
                raise DataError(
                    f"emodb: {path}: {problem}; fix or remove the file, or set the option "
                    "skip_invalid: true to leave such files out"
                )
            skipped.add(path, problem)
            continue
        row = {
            "sample_id": path.name[: -len(path.suffix)],
            "speaker": speaker,
            "label": _EMODB_EMOTION[letter],
            "text_code": text_code,
            "version": version,
            "_audio": path,
        }
        if with_text:
            row["text"] = text_code
        rows.append(row)
    if not rows:
        raise DataError(
            f"emodb: no EmoDB wav files in {wav_dir}; expected the distributed layout "
            "<source>/wav/03a01Fa.wav (speaker, text code, emotion letter, version)"
        )
    frame = pd.DataFrame(rows).sort_values("sample_id", kind="stable").reset_index(drop=True)
    folds = round_robin_folds(frame["speaker"], n_folds, where=f"emodb {wav_dir}")
    frame["fold"] = frame["speaker"].map(folds).astype(int)
    check_speaker_folds(frame, f"emodb {wav_dir}")
    audio = list(frame.pop("_audio"))
    add_media_columns(frame, {"audio": audio})
    info = corpus_info(
        opts["dataset"], "emodb", EMODB_CLASSES, src, frame, skipped=skipped.report()
    )
    write_raw_corpus(out_dir, frame, info)
    return summary(info)
