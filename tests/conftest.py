"""Fixtures shared across the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def two_ranks(tmp_path):
    """Run a script on two gloo ranks under torchrun; returns the JSON it wrote (argv[1])."""

    def run(script_text: str) -> dict:
        script, out = tmp_path / "rank.py", tmp_path / "out.json"
        script.write_text(script_text)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc-per-node",
                "2",
                "--standalone",
                str(script),
                str(out),
            ],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(out.read_text())

    return run
