from __future__ import annotations

import sys
from pathlib import Path

# scripts/run/ (make run's supervisor, environment and status line) as the package `run`.
SCRIPTS_DIR = str(Path(__file__).resolve().parents[2] / "scripts")
if SCRIPTS_DIR not in sys.path:
    sys.path.insert(0, SCRIPTS_DIR)
