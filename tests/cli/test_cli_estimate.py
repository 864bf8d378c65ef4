"""`memfit estimate`: the JSON contract, the honest answer, and LLaMA-7B on a laptop."""

import json
import resource
import subprocess
import sys
import time

from memfit.cli import main


def test_llama_7b_estimate_is_fast_small_and_right():
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "memfit", "estimate", "zoo:llama-7b", "--batch-size", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    child_peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert elapsed < 60
    assert child_peak_rss < 2 * 2**30
    params = data["categories"]["parameters"] / 4  # fp32
    assert abs(params - 6.74e9) / 6.74e9 < 0.01
    assert data["method"] == "estimated" and data["peak_phase"] == "optimizer_step"


def test_budget_adds_the_verdict_keys(capsys):
    assert (
        main(
            [
                "estimate",
                "zoo:mlp:depth=2,width=64,inputs=32",
                "--batch-size",
                "16",
                "--budget",
                "1GB",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    for key in ("budget_bytes", "fits", "shortfall_bytes", "max_batch_size", "max_batch_size_pow2"):
        assert key in data
    assert data["budget_bytes"] == 10**9 and data["fits"] is True and data["shortfall_bytes"] == 0
    assert data["max_batch_size"] >= data["max_batch_size_pow2"] > 16


def test_too_big_prints_the_shortfall_line(capsys):
    assert (
        main(["estimate", "zoo:mlp:depth=8,width=8192", "--batch-size", "8", "--budget", "2GB"])
        == 0
    )
    out = capsys.readouterr().out
    assert "short" in out and "needs" in out


def test_bad_optimizer_is_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "memfit", "estimate", "zoo:cnn", "--optimizer", "lion"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "invalid choice" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_nodes_divide_model_states(capsys):
    assert main(["estimate", "zoo:mlp:depth=8,width=1024", "--batch-size", "8", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "estimate",
                "zoo:mlp:depth=8,width=1024",
                "--batch-size",
                "8",
                "--nodes",
                "4",
                "--json",
            ]
        )
        == 0
    )
    four = json.loads(capsys.readouterr().out)
    assert four["nodes"] == 4
    assert four["categories"]["optimizer"] == -(-one["categories"]["optimizer"] // 4)
    assert four["categories"]["parameters"] < one["categories"]["parameters"] / 2
    assert four["categories"]["activations"] == one["categories"]["activations"]
