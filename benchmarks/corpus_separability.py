"""How well each modality alone, and all of them together, separate the classes of a corpus.

Speaker-independent cross-validation over the store's `fold` column (whole speakers per fold)
with a standardised logistic regression: a cheap, model-free check that the built-in corpus
gives every modality some signal and fusion clearly more (docs/builtin_corpus.md).

    .venv/bin/python benchmarks/corpus_separability.py data/features/builtin
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from robustmer.data.store import FeatureStore

DEFAULT_FEATURES = {
    "audio": "audio/egemaps_functionals",
    "video": "video/face_hog_mean",
    "text": "text/minilm",
}


def _cv_proba(x: np.ndarray, y: np.ndarray, folds: np.ndarray, c: float) -> np.ndarray:
    """Out-of-fold class probabilities `[N, K]`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    proba = np.zeros((len(y), int(y.max()) + 1))
    for fold in np.unique(folds):
        test = folds == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(x[~test], y[~test])
        proba[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return proba


def _scores(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, unweighted average recall)."""
    pred = proba.argmax(1)
    recalls = [np.mean(pred[y == k] == k) for k in np.unique(y)]
    return float(np.mean(pred == y)), float(np.mean(recalls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="feature store folder (has store.json)")
    parser.add_argument("--C", type=float, default=0.1, help="inverse L2 strength (default 0.1)")
    for modality, name in DEFAULT_FEATURES.items():
        parser.add_argument(f"--{modality}", default=name, help=f"feature (default {name})")
    args = parser.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        parser.error("this benchmark needs scikit-learn (pip install scikit-learn)")

    store = FeatureStore(args.store)
    manifest = store.manifest
    classes = store.classes
    y = manifest["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = manifest["fold"].to_numpy()
    names = {m: getattr(args, m) for m in DEFAULT_FEATURES}
    feats = {
        m: np.nan_to_num(store.utterance_matrix(n).astype(np.float64)) for m, n in names.items()
    }
    proba = {m: _cv_proba(x, y, folds, args.C) for m, x in feats.items()}
    modalities = list(feats)
    proba["fusion (early)"] = _cv_proba(np.hstack([feats[m] for m in modalities]), y, folds, args.C)
    proba["fusion (late)"] = np.exp(sum(np.log(proba[m] + 1e-9) for m in modalities))
    for dropped in modalities:
        kept = [m for m in modalities if m != dropped]
        proba[f"fusion without {dropped}"] = _cv_proba(
            np.hstack([feats[m] for m in kept]), y, folds, args.C
        )

    arousal_hi = np.isin(y, [classes.index(c) for c in ("happy", "angry") if c in classes])
    valence_pos = y == classes.index("happy") if "happy" in classes else None
    print(
        f"{store.root}: {len(y)} utterances, {manifest['speaker'].nunique()} speakers, "
        f"{len(np.unique(folds))} speaker-disjoint folds, chance {1 / len(classes):.2f}"
    )
    header = f"{'features':<24}{'acc':>7}{'UA':>7}{'arousal':>9}{'valence':>9}  per class"
    print(header)
    print("-" * (len(header) + 4 * 8))
    for label, p in proba.items():
        acc, ua = _scores(p, y)
        pred = p.argmax(1)
        aro = np.mean(
            np.isin(pred, np.flatnonzero([c in ("happy", "angry") for c in classes])) == arousal_hi
        )
        val = (
            np.mean((pred == classes.index("happy")) == valence_pos)
            if valence_pos is not None
            else float("nan")
        )
        per_class = " ".join(
            f"{c[:3]}={np.mean(pred[y == k] == k):.2f}" for k, c in enumerate(classes)
        )
        print(f"{label:<24}{acc:>7.3f}{ua:>7.3f}{aro:>9.3f}{val:>9.3f}  {per_class}")
    best = max(_scores(proba[m], y)[0] for m in modalities)
    fused = _scores(proba["fusion (early)"], y)[0]
    print(f"\nearly fusion - best single modality: {100 * (fused - best):+.1f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
