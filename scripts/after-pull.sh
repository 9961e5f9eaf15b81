#!/usr/bin/env bash
# After `git clone` or `git pull`: fetch the DVC-tracked outputs, then let Snakemake adopt them,
# so that `dvc status`, `dvc repro` and `snakemake -n` all find nothing to do (docs/remote.md).
#
# Why: `dvc pull` writes files in its own order, so their times say nothing about which stage
# ran first, and a fresh clone has no .snakemake/ metadata: `snakemake -n` would rerun almost
# everything. `snakemake --touch --forceall` marks every job done, in pipeline order, and records
# its code, params and input checksums, so later edits still trigger reruns. That record would
# hide a real change from Snakemake, so nothing is touched unless DVC says every output matches
# dvc.lock (code, params and data) and git says the tracked files (Snakefile and rules, which
# DVC does not see) are as committed.
#
# Usage: scripts/after-pull.sh [dvc pull options, e.g. -r myremote]
# Exit status: 0 when everything is up to date for both tools; 1 when something changed (nothing
# touched: run `dvc repro` or `snakemake`), or on any error.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dvc pull "$@"

if ! dvc status --quiet; then
    dvc status >&2
    echo "after-pull: DVC reports changes (above); not touching Snakemake outputs." \
        "Run 'dvc repro' (or 'snakemake') to bring them up to date." >&2
    exit 1
fi
if ! git diff --quiet HEAD --; then
    git status --short --untracked-files=no >&2
    echo "after-pull: tracked files differ from the commit (above); not touching Snakemake" \
        "outputs. Commit or stash them first." >&2
    exit 1
fi
# Touching a directory output writes .snakemake_timestamp into it; DVC must ignore that file or
# the touch itself would make every directory output look modified.
if ! dvc check-ignore --quiet data/.snakemake_timestamp; then
    echo "after-pull: add '.snakemake_timestamp' to .dvcignore first (see docs/remote.md)." >&2
    exit 1
fi

# --no-hooks: only bookkeeping here, so no onstart/onsuccess handlers (they may set up tracking).
snakemake --touch --forceall --no-hooks
dvc status --quiet || {
    dvc status >&2
    echo "after-pull: DVC sees changes after the touch (above)." >&2
    exit 1
}
echo "after-pull: DVC and Snakemake are up to date."
