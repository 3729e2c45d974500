"""The README's compatibility table is the one generated from compat_matrix.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_table_matches_the_matrix():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "matrix_table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
