"""The command line: JSON contract, one-line errors, exit codes."""

import json
import subprocess
import sys

import pytest

from memfit.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memfit", *args], capture_output=True, text=True, timeout=300
    )


def test_profile_json_follows_the_contract(capsys):
    assert (
        main(["profile", "zoo:mlp:depth=2,width=32,inputs=16", "--batch-size", "8", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    for key in (
        "method",
        "device",
        "batch_size",
        "peak_bytes",
        "categories",
        "modules",
        "rss_peak_bytes",
    ):
        assert key in data
    assert data["method"] == "measured" and data["batch_size"] == 8
    assert set(data["categories"]) == {
        "parameters",
        "gradients",
        "optimizer",
        "activations",
        "other",
    }
    assert all(isinstance(v, int) for v in data["categories"].values())
    assert sum(data["categories"].values()) == data["peak_bytes"]
    assert {"name", "parameters", "activations"} <= set(data["modules"][0])


def test_profile_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "chart.png"
    assert main(["profile", "zoo:cnn", "--batch-size", "4", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "parameters" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["profile", "zoo:nosuch"], "unknown zoo model"),
        (["profile", "zoo:mlp:depth=x=y"], "depth"),
        (["profile", "zoo:cnn", "--precision", "fp16", "--device", "cpu"], "CUDA"),
    ],
)
def test_errors_are_one_line_and_non_zero(args, needle):
    result = run_cli(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def test_budgets_json_lists_the_presets(capsys):
    assert main(["budgets", "--json"]) == 0
    names = {b["name"]: b for b in json.loads(capsys.readouterr().out)["budgets"]}
    assert names["colab"]["bytes"] == 12 * 10**9 and names["t4"]["device"] == "gpu"


def test_python_dash_m_works():
    result = run_cli("--help")
    assert result.returncode == 0 and "profile" in result.stdout
