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
