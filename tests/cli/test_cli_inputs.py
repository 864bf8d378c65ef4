"""Every input checked: one line on stderr that says what to do, non-zero exit, nothing run."""

from __future__ import annotations

import pytest

from memfit.cli import main


@pytest.mark.parametrize(
    "args,needle",
    [
        (["estimate", "zoo:cnn", "--budget", ""], "budget is empty"),
        (["estimate", "zoo:cnn", "--budget", "1e999"], "larger than any machine"),
        (["plan", "zoo:cnn", "--budget", "1e999"], "larger than any machine"),
        (["estimate", "zoo:cnn", "--budget", "0"], "less than one byte"),
        (["estimate", "zoo:transformer", "--seq-len", "0"], "--seq-len: must be at least 1"),
        (["estimate", "zoo:cnn", "--top", "-1"], "--top: must be at least 0"),
        (["profile", "zoo:cnn", "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["estimate", "zoo:cnn", "--nodes", "x"], "'x' is not a whole number"),
        (["estimate", "zoo:cnn", "--input-shape", "3,x,32"], "--input-shape '3,x,32'"),
        (["estimate", "zoo:cnn", "--input-shape", "3,0,32"], "positive integers"),
        (["compress", "zoo:cnn", "--bits", "3"], "invalid choice: 3"),
        (["compress", "zoo:cnn", "--skip", "nosuchlayer"], "cannot skip 'nosuchlayer'"),
        (["compress", "zoo:cnn", "--skip", "head2"], "did you mean head"),
    ],
)
def test_bad_input_gets_one_line_that_says_what_to_do(args, needle, capsys):
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert captured.out == ""


def test_profile_refuses_a_step_larger_than_the_memory_available(monkeypatch, capsys):
    # The real machine, the real model: LLaMA-7B's step needs about 109 GB.
    import psutil

    needs = 100 * 10**9
    if psutil.virtual_memory().available > needs:
        pytest.skip("this machine has room for a LLaMA-7B step")
    assert main(["profile", "zoo:llama-7b", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0] and "memfit estimate" in err[0]


def test_profile_checks_the_estimate_against_what_is_free_and_force_skips_it(monkeypatch, capsys):
    from memfit.measure import headroom

    monkeypatch.setattr(headroom, "available_bytes", lambda device: 1000)
    spec = "zoo:mlp:depth=2,width=32,inputs=16"
    assert main(["profile", spec, "--batch-size", "4"]) == 2
    assert "1.0 kB of memory available" in capsys.readouterr().err
    assert main(["profile", spec, "--batch-size", "4", "--force", "--json"]) == 0
