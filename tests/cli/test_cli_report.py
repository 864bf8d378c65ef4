"""--report, `memfit report`, the timeline in JSON, progress only where it belongs."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from rich.console import Console

from memfit import progress
from memfit.cli import main

MLP = "zoo:mlp:depth=2,width=64,inputs=16"


def _cli(*args: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "memfit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MEMFIT_DEBUG": "", **env},
        check=False,
    )


def test_estimate_json_has_a_compact_timeline_whose_peak_is_the_categories(tmp_path, capsys):
    report = tmp_path / "e.html"
    assert main(["estimate", MLP, "--batch-size", "8", "--json", "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    timeline = data["timeline"]
    peak = max(
        range(timeline["samples"]),
        key=lambda i: sum(v[i] for v in timeline["categories"].values()),
    )
    assert {c: v[peak] for c, v in timeline["categories"].items()} == data["categories"]
    # One line of the output: thousands of samples do not bury the contract's keys.
    assert sum('"timeline"' in line for line in out.splitlines()) == 1
    assert report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "report written" in err and "report written" not in out


def test_memfit_report_draws_saved_output_of_profile(tmp_path, capsys):
    assert main(["profile", MLP, "--batch-size", "8", "--json"]) == 0
    saved = tmp_path / "p.json"
    saved.write_text(capsys.readouterr().out)
    assert main(["report", str(saved)]) == 0
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    data = json.loads(saved.read_text())
    assert f"{data['peak_bytes']:,}" in page and "measured" in page
    assert f"{data['timeline']['events']:,} allocations and frees" in page


def test_memfit_report_reads_standard_input(tmp_path):
    done = _cli("estimate", MLP, "--json")
    out = tmp_path / "from-stdin.html"
    piped = subprocess.run(
        [sys.executable, "-m", "memfit", "report", "-", "-o", str(out)],
        input=done.stdout,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert f"{json.loads(done.stdout)['peak_bytes']:,}" in out.read_text(encoding="utf-8")


def test_memfit_report_refuses_what_it_cannot_draw_in_one_line(tmp_path):
    not_json = tmp_path / "log.json"
    not_json.write_text("memfit: some text\n")
    other = tmp_path / "other.json"
    other.write_text('{"rows": 3}')
    for path, needle in (
        (not_json, "is not JSON"),
        (other, "not the output"),
        (tmp_path / "none.json", "no such file"),
    ):
        done = _cli("report", str(path))
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and needle in lines[0], done.stderr


def test_report_flag_checks_its_name_before_the_work(capsys):
    for bad, needle in (("r.png", "something.html"), ("/nonexistent/r.html", "does not exist")):
        try:
            main(["plan", MLP, "--budget", "1GB", "--report", bad])
        except SystemExit as exc:
            assert exc.code == 2
        assert needle in capsys.readouterr().err


def test_progress_is_drawn_on_a_terminal_and_never_with_json(capsys):
    drawn = io.StringIO()
    console = Console(file=drawn, force_terminal=True, width=100)
    try:
        progress.set_enabled(True, console)
        assert main(["estimate", MLP]) == 0
        assert "estimating" in drawn.getvalue()
        capsys.readouterr()
        drawn.truncate(0)
        progress.set_enabled(True, console)
        assert main(["estimate", MLP, "--json"]) == 0
        assert drawn.getvalue() == ""
        json.loads(capsys.readouterr().out)
    finally:
        progress.set_enabled(None)


def test_no_third_party_lines_on_stderr_unless_debugging(tmp_path):
    # A user's model file that imports libraries which log and warn at import time.
    model_file = tmp_path / "noisy.py"
    model_file.write_text(
        "import logging, warnings\n"
        "logging.getLogger('torchao').warning('Failed to load a kernel')\n"
        "warnings.warn('a deprecation from somewhere')\n"
        "from memfit import zoo\n"
        "def workload():\n"
        "    return zoo.get('mlp', depth=2, width=16, inputs=8)\n"
    )
    spec = f"{model_file}:workload"
    quiet = _cli("estimate", spec, "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = _cli("estimate", spec, "--json", MEMFIT_DEBUG="1")
    assert loud.returncode == 0
    assert "Failed to load a kernel" in loud.stderr and "deprecation" in loud.stderr


def test_version_and_examples():
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("memfit 0.1.0 (torch ")
    text = _cli("--help").stdout
    examples = text.split("examples:")[1]
    assert sum(line.strip().startswith("memfit ") for line in examples.splitlines()) == 3


def test_every_option_of_every_command_has_help():
    import argparse

    from memfit.cli import build_parser

    parser = build_parser()
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                assert sub.description or action._name_parser_map[name], name
                missing += [
                    f"{name} {a.option_strings or a.dest}"
                    for a in sub._actions
                    if not a.help and not isinstance(a, argparse._HelpAction)
                ]
    assert missing == []
