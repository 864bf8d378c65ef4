from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

from memfit.compress import cluster, compress, load, prune, quantize, save
from memfit.errors import CompressError


@pytest.mark.parametrize(
    "method",
    [
        lambda m: prune(m, 0.8),
        lambda m: prune(m, 0.5, structured=True),
        lambda m: quantize(m, bits=4),
        lambda m: cluster(m, k=8),
        lambda m: compress(m, 0.8, k=16, index_bits=4),
    ],
    ids=["sparse", "structured", "int4", "cluster", "all"],
)
def test_save_then_load_gives_the_same_outputs(cnn, make_cnn, tmp_path, method):
    small, _ = method(cnn)
    path = save(small.eval(), tmp_path / "model.safetensors")
    back = load(path, make_cnn()).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(back(x), small(x))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_file_is_plain_safetensors_with_a_json_description(mlp, tmp_path):
    small, _ = quantize(mlp, bits=8)
    path = save(small, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    description = json.loads(header["__metadata__"]["memfit.compress"])
    assert description["layers"]["0"]["values"] == {
        "kind": "quantized",
        "bits": 8,
        "count": 32 * 64,
        "rows": 64,
    }
    assert header["0.values.codes"]["dtype"] == "I8"


def test_loading_into_another_architecture_is_refused(mlp, tmp_path):
    small, _ = cluster(mlp, k=4)
    path = save(small, tmp_path / "m.safetensors")
    with pytest.raises(CompressError, match="same architecture"):
        load(path, nn.Sequential(nn.Linear(32, 64)))


def test_foreign_or_missing_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CompressError, match="not written by memfit"):
        load(other, nn.Linear(2, 2))
    with pytest.raises(CompressError, match="does not exist"):
        load(tmp_path / "missing.safetensors", nn.Linear(2, 2))
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CompressError, match="not a readable"):
        load(tmp_path / "junk.safetensors", nn.Linear(2, 2))


def test_failed_save_leaves_the_old_file_untouched(tmp_path):
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"previous")
    with pytest.raises(CompressError, match="tied"):
        save(tied, path)
    assert path.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [path]
