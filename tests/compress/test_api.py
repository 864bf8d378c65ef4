from __future__ import annotations

import memfit.compress as mc


def test_public_surface():
    assert set(mc.__all__) == {
        "CompressReport",
        "CompressedConv2d",
        "CompressedLinear",
        "LayerReport",
        "accuracy",
        "cluster",
        "compress",
        "finetune",
        "kmeans_1d",
        "load",
        "prune",
        "quantize",
        "save",
        "workload_data",
    }
    for name in mc.__all__:
        assert getattr(mc, name).__doc__ or name.endswith("Report")
