"""The project speaks of itself alone: no shipped file points at a directory outside the repository
(e.g. a ``shared/reference`` folder of the machine it was written on, which users do not have)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["configs", "docs", "lit_reason", "callbacks", "datamodules", "README.md"]
OUTSIDE = ("/work/shared", "../shared", "shared/reference")


def shipped_files() -> list[Path]:
    """Tracked files under SHIPPED (and new, not yet tracked ones that git does not ignore)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *SHIPPED],
                                cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked sdist)
        listed = [str(p.relative_to(REPO)) for name in SHIPPED for p in [REPO / name, *(REPO / name).rglob("*")]
                  if p.is_file() and "__pycache__" not in p.parts]
    return [REPO / name for name in listed if (REPO / name).is_file()]


def test_no_file_points_outside_the_repository():
    files = shipped_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 20
    offending = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary data
            continue
        for lineno, line in enumerate(text.splitlines(), start=1):
            if any(marker in line for marker in OUTSIDE):
                offending.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    if offending:
        pytest.fail("files that point outside the repository (write the facts into docs/ instead):\n"
                    + "\n".join(offending))
