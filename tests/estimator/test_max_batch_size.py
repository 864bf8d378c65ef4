"""The largest batch that fits, checked against real steps."""

import pytest

from memfit import zoo
from memfit.budget import Budget
from memfit.estimator import FitVerdict, max_batch_size
from memfit.measure.profile import profile


def test_predicted_batch_fits_and_the_next_power_of_two_does_not():
    w = zoo.get("cnn", channels=32, image=16)
    budget = Budget.parse("40MB")
    fit = max_batch_size(w, budget, reserve_bytes=0)
    assert fit.max_batch_size >= fit.max_batch_size_pow2 >= 2
    at_pow2 = profile(w, fit.max_batch_size_pow2)
    at_max = profile(w, fit.max_batch_size)
    next_pow2 = profile(w, 2 * fit.max_batch_size_pow2)
    assert at_pow2.peak_bytes <= budget.bytes
    assert at_max.peak_bytes <= budget.bytes
    assert next_pow2.peak_bytes > budget.bytes


def test_estimates_bracket_the_answer():
    fit = max_batch_size(zoo.get("mlp", depth=2, width=256, inputs=256), "30MB", reserve_bytes=0)
    assert fit.estimates[fit.max_batch_size] <= fit.usable_bytes
    assert fit.estimates[fit.max_batch_size + 1] > fit.usable_bytes


def test_nothing_fits_gives_zero():
    fit = max_batch_size(zoo.get("mlp", depth=2, width=1024), "1MB", reserve_bytes=0)
    assert fit.max_batch_size == 0 and fit.max_batch_size_pow2 == 0 and fit.peak_bytes is None


def test_the_runtime_reserve_is_taken_from_the_budget():
    w = zoo.get("mlp", depth=2, width=256, inputs=256)
    with_reserve = max_batch_size(w, "600MB")
    without = max_batch_size(w, "600MB", reserve_bytes=0)
    assert with_reserve.usable_bytes == without.usable_bytes - 400 * 10**6
    assert with_reserve.max_batch_size < without.max_batch_size


def test_verdict_says_how_much_is_missing_and_what_fits():
    verdict = FitVerdict(
        peak_bytes=int(40.8e9), reserve_bytes=int(0.4e9), budget=Budget.parse("colab")
    )
    assert not verdict.fits
    assert verdict.shortfall_bytes == int(29.2e9)
    line = verdict.line()
    assert (
        "needs 41.2 GB" in line and "29.2 GB short" in line and "fits a100-40gb" in line
    )  # 40 GiB = 42.9 GB
    ok = FitVerdict(peak_bytes=10**9, reserve_bytes=0, budget=Budget.parse("colab"))
    assert ok.fits and ok.shortfall_bytes == 0 and "to spare" in ok.line()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_more_optimizer_state_means_smaller_batches(optimizer):
    w = zoo.get("mlp", depth=4, width=512, inputs=512)
    fit = max_batch_size(w, "80MB", optimizer, reserve_bytes=0)
    assert fit.max_batch_size > 0
    if optimizer == "adam":
        assert fit.max_batch_size < max_batch_size(w, "80MB", "sgd", reserve_bytes=0).max_batch_size
