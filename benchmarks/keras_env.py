"""The Keras reference's environment and runner, shared by train_speed.py and inference_speed.py.

TensorFlow is never a dependency of mobileseg: the tutorial's Keras model (``keras_tutorial_step.py``) runs in
its own virtual environment, ``.bench/tfenv`` (tensorflow-cpu 2.21.0), created on first use, and prints one JSON
line that the benchmarks read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TF_PYTHON = ROOT / ".bench" / "tfenv" / "bin" / "python"
TENSORFLOW = "tensorflow-cpu==2.21.0"


def ensure_tf_env(tf_python: Path = TF_PYTHON) -> Path:
    """``tf_python``, creating its environment with TensorFlow first if it does not exist yet."""
    if not tf_python.exists():
        env_dir = tf_python.parent.parent
        print(f"creating {env_dir} with {TENSORFLOW} (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
        subprocess.run([str(tf_python), "-m", "pip", "install", "-q", TENSORFLOW], check=True)
    return tf_python


def run_keras(tf_python: Path, *args: str) -> dict[str, Any]:
    """Run ``keras_tutorial_step.py`` with ``args`` in the TensorFlow environment; its JSON result line."""
    out = subprocess.run(
        [str(ensure_tf_env(tf_python)), str(ROOT / "benchmarks" / "keras_tutorial_step.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
