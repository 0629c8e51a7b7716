"""The import-linter contract in pyproject.toml: `make lint` fails when a layer is crossed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "core", "models", "workers", "seed", "embedded", "bench")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tree


def test_the_layers_hold_and_a_planted_crossing_fails(tmp_path):
    tree = _copy_tree(tmp_path)
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "KEPT" in kept.stdout

    (tree / "workers" / "planted.py").write_text("from api.handlers import person_id\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "workers is not allowed to import api" in broken.stdout
    assert "workers.planted -> api.handlers" in broken.stdout


def test_the_core_imports_no_layer_above_it(tmp_path):
    tree = _copy_tree(tmp_path)
    (tree / "core" / "planted.py").write_text("import seed.synth\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "core is not allowed to import seed" in broken.stdout


def test_only_the_store_talks_to_the_database(tmp_path):
    tree = _copy_tree(tmp_path)
    (tree / "core" / "services" / "planted.py").write_text("from pymongo import UpdateOne\n")
    (tree / "api" / "planted.py").write_text("import beanie\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "Only core.store talks to MongoDB BROKEN" in broken.stdout
    assert "core.services.planted -> pymongo" in broken.stdout
    assert "api.planted -> beanie" in broken.stdout
