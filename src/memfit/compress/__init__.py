"""Model compression that really shrinks memory: pruning, quantization, weight sharing.

    prune(model, amount)        sparse (CSR) or structured (smaller layers)
    quantize(model, bits=8)     int8 / packed 4-bit per-channel weights
    cluster(model, k=16)        codebook of k shared values + packed indices
    compress(model, ...)        prune, then cluster or quantize (Deep Compression)
    finetune(model, data)       short training that keeps pruned weights at zero
    save(model, path) / load(path, model)   safetensors, no pickle

Each compressing function returns `(model, CompressReport)` with the bytes the
model holds before and after (measured with `memfit.measure.bytes.module_bytes`)
and the accuracy before and after when `validation=(x, y)` is given.
"""

from __future__ import annotations

from memfit.compress._cluster import cluster, kmeans_1d
from memfit.compress._io import load, save
from memfit.compress._layers import CompressedConv2d, CompressedLinear
from memfit.compress._pipeline import compress
from memfit.compress._prune import prune
from memfit.compress._quantize import quantize
from memfit.compress._report import CompressReport, LayerReport, accuracy
from memfit.compress._training import finetune, workload_data

__all__ = [
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
]
