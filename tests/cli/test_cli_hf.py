"""The command line with hf: models: --seq-len, --emit, and bad input as one line."""

import json

import pytest

from memfit.cli import main

pytest.importorskip("transformers")

TINY = "hf:gpt2:n_layer=2,n_embd=64,n_head=2,vocab_size=300"


def _code(stdout: str) -> str:
    return stdout[stdout.index("# memfit plan") :]


def test_seq_len_flag_sets_the_sequence(capsys):
    peaks = {}
    for seq_len in (32, 64):
        assert (
            main(["estimate", TINY, "--seq-len", str(seq_len), "--batch-size", "4", "--json"]) == 0
        )
        data = json.loads(capsys.readouterr().out)
        assert data["config"]["seq_len"] == seq_len
        peaks[seq_len] = data["peak_bytes"]
    assert peaks[64] > peaks[32]


def test_plan_emits_training_arguments_that_run(capsys):
    rc = main(["plan", f"{TINY},seq_len=64", "--budget", "15MB", "--reserve", "0", "--batch-size", "16", "--exact", "--emit", "hf-trainer"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    code = _code(out)
    namespace: dict = {}
    exec(compile(code.split("trainer = Trainer(")[0], "emitted", "exec"), namespace)
    args = namespace["args"]
    assert args.use_cpu  # a budget in bytes is RAM
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps >= 16
    assert args.gradient_accumulation_steps > 1  # 15 MB needs micro-batches: the batch takes 26 MB
    assert namespace["budget_check"].watch.budget_bytes == 15_000_000


def test_plan_emits_lightning_code(capsys):
    rc = main(["plan", f"{TINY},seq_len=64", "--budget", "15MB", "--reserve", "0", "--batch-size", "16", "--exact", "--emit", "lightning"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    code = _code(out)
    compile(code, "emitted", "exec")
    assert "MemoryPlanCallback(plan)" in code and '"budget_bytes": 15000000' in code


def test_emit_and_json_together_is_one_clear_line(capsys):
    rc = main(["plan", TINY, "--budget", "1GB", "--emit", "hf-trainer", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "give one of them" in err


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("hf:nosuchmodel", "not a transformers model type"),
        ("hf:gpt2:n_layer=2.5", "n_layer takes an integer"),
        ("hf:someone/private-model", "cannot fetch its config.json"),
        ("hf:gpt2:n_embd=100,n_head=3,n_layer=1", "divisible"),
    ],
)
def test_bad_hf_models_are_one_line_on_stderr(spec, needle, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["estimate", spec, "--batch-size", "1"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and needle in captured.err
