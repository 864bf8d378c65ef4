from __future__ import annotations

import json

from memfit.cli import main


def test_compress_json_has_the_contract_keys(capsys, tmp_path):
    out = tmp_path / "mlp.safetensors"
    code = main(
        [
            "compress",
            "zoo:mlp:inputs=64,depth=1,width=32",
            "--method",
            "prune",
            "--amount",
            "0.8",
            "--train-steps",
            "40",
            "--finetune-steps",
            "10",
            "-o",
            str(out),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)  # one JSON object, nothing else
    assert isinstance(result["before_bytes"], int) and isinstance(result["after_bytes"], int)
    assert result["after_bytes"] < result["before_bytes"]
    assert 0 <= result["accuracy_before"] <= 1 and 0 <= result["accuracy_after"] <= 1
    assert "trained 40 steps" in result["notes"][0]
    assert result["output"] == str(out) and out.is_file()


def test_compress_without_data_says_so(capsys):
    code = main(
        [
            "compress",
            "zoo:mlp:inputs=16,depth=1,width=16",
            "--method",
            "quantize",
            "--bits",
            "4",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["accuracy_before"] is None and result["accuracy_after"] is None
    assert "randomly initialised" in result["notes"][0]


def test_bad_amount_is_one_line_on_stderr(capsys):
    code = main(
        ["compress", "zoo:mlp:inputs=16,depth=1,width=16", "--method", "prune", "--amount", "2"]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "[0, 1)" in captured.err


def test_a_skip_that_names_no_layer_is_refused_before_training(capsys):
    import time

    start = time.perf_counter()
    assert main(["compress", "zoo:cnn", "--skip", "haed", "--train-steps", "150"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot skip 'haed'" in err[0] and "did you mean head" in err[0]
    assert time.perf_counter() - start < 5  # refused before the 150 training steps


def test_skip_is_checked_in_the_library_too(mlp):
    import pytest

    from memfit.compress import prune
    from memfit.errors import CompressError

    with pytest.raises(CompressError, match="cannot skip '9'"):
        prune(mlp, 0.5, skip=["9"])
    _, report = prune(mlp, 0.5, skip=["4"])
    assert "4" not in {layer.name for layer in report.layers}


def test_training_and_compressing_report_progress():
    import io

    from rich.console import Console

    from memfit import progress
    from memfit.compress import cluster, finetune

    drawn = io.StringIO()
    progress.set_enabled(True, Console(file=drawn, force_terminal=True, width=100))
    try:
        import torch
        from torch import nn

        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        x = torch.randn(32, 8)
        finetune(model, (x, (x[:, 0] > 0).long()), steps=5)
        cluster(model, 4)
    finally:
        progress.set_enabled(None)
    text = drawn.getvalue()
    assert "training 5 steps" in text and "layers" in text
