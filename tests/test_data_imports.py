"""The Data step stays light to import: no torch, transformers, datasets, openpyxl or pandas."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "openpyxl", "pandas")


def test_data_modules_import_light():
    code = ("import sys, screens.data, tuitune.commands.data, tuitune.data, tuitune.templates, tuitune.encode; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
