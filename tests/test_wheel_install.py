"""The package works installed from its wheel, not only as an editable checkout.

Every file the package reads at run time (the params schema, the dataset registry, the built-in
lexicon, method presets, protocols) must be inside the wheel; a file that lives (or is linked)
outside src/robustmer only works from the checkout. The wheel is built offline from a copy of the
checkout and installed without dependencies (they come from the running venv); the script runs
outside the checkout with only the installed copy of robustmer importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import robustmer
    from robustmer.config import load_params, preset, protocol
    from robustmer.data.builtin.transcripts import lexicon
    from robustmer.data.registry import dataset_info, registry

    site = Path(sys.argv[1]).resolve()
    assert Path(robustmer.__file__).resolve().is_relative_to(site), robustmer.__file__
    params = load_params(sys.argv[2])  # the schema, its defaults, the presets params.yaml names
    assert params["dataset"] in registry() and dataset_info("folder").kind == "raw"
    assert lexicon()
    for arch, name in (("nmer", "iemocap"), ("imder", "mosi"), ("semi", "builtin_cpu"),
                       ("vat", "mer2024")):
        assert preset(arch, name), (arch, name)
    assert protocol("mer2024")["train"]["selection_metric"] == "weighted_f1"
    print("wheel ok")
    """
)


def _copy_checkout(dst: Path) -> None:
    """What a wheel is built from, copied so that the build leaves nothing in the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", dst / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)


def test_installed_wheel_loads_params_registry_and_presets(tmp_path: Path) -> None:
    source, wheels, site, work = (tmp_path / n for n in ("source", "wheels", "site", "work"))
    _copy_checkout(source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("robustmer-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    work.mkdir()
    shutil.copy2(ROOT / "params.yaml", work / "params.yaml")
    # Only the installed copy: no checkout src on the path (an editable install's finder is
    # bypassed by putting the target first, and the assertion in SCRIPT checks it).
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site), "params.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wheel ok" in proc.stdout
    cli = subprocess.run(
        [sys.executable, "-m", "robustmer.cli", "validate", "--help"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]


def test_no_symlinks_in_the_package() -> None:
    """A link to a file outside src/robustmer works in the checkout only; keep the file itself."""
    tracked = subprocess.run(
        ["git", "ls-files", "-s", "src"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    links = [line.split("\t", 1)[1] for line in tracked if line.startswith("120000")]
    assert not links, f"symlinks in the package (move the files into src/robustmer): {links}"
