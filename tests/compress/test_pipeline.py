from __future__ import annotations

import pytest
import torch

from memfit import zoo
from memfit.compress import accuracy, compress, finetune, workload_data


@pytest.fixture(scope="module")
def trained_digits_mlp():
    torch.manual_seed(0)
    workload = zoo.get("mlp", inputs=64, depth=2, width=128)
    x_train, y_train, x_test, y_test = workload_data(workload)
    model = workload.build_model()
    finetune(model, (x_train, y_train), steps=200, lr=3e-3)
    return model, (x_train, y_train), (x_test, y_test)


@pytest.mark.slow
def test_deep_compression_pipeline_on_real_digits(trained_digits_mlp):
    model, train, test = trained_digits_mlp
    assert accuracy(model, test) > 0.93
    small, report = compress(
        model, 0.8, k=16, index_bits=4, validation=test, finetune_data=train, finetune_steps=100
    )
    assert [s.method for s in report.stages] == ["prune", "cluster k=16"]
    assert report.before_bytes == report.stages[0].before_bytes
    assert report.stages[0].after_bytes > report.after_bytes
    assert report.ratio > 12
    assert report.accuracy_change > -0.04
    assert report.accuracy_after == accuracy(small, test)


def test_pipeline_with_bits_quantizes_instead(trained_digits_mlp):
    model, _, test = trained_digits_mlp
    small, report = compress(model, 0.8, bits=8, validation=test)
    assert report.stages[1].method == "quantize int8"
    assert report.ratio > 8
