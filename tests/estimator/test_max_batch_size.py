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
    # The one rule (Budget.room): the reserve comes off first, then the 5% margin.
    assert with_reserve.usable_bytes == int((600 - 400) * 10**6 * 0.95)
    assert without.usable_bytes == int(600 * 10**6 * 0.95)
    assert with_reserve.max_batch_size < without.max_batch_size


def test_verdict_says_how_much_is_missing_and_what_fits():
    verdict = FitVerdict(
        peak_bytes=int(40.8e9), reserve_bytes=int(0.4e9), budget=Budget.parse("colab")
    )
    assert not verdict.fits
    # Needs the peak with its 5% margin, plus the reserve: 40.8 / 0.95 + 0.4 = 43.35 GB.
    assert verdict.need_bytes == pytest.approx(40.8e9 / 0.95 + 0.4e9, abs=2)
    assert verdict.shortfall_bytes == verdict.need_bytes - 12 * 10**9
    line = verdict.line()
    assert (
        "needs 43.3 GB" in line and "31.3 GB short" in line and "fits h100" in line
    )  # an A100 40 GB (42.9 GB) is too small once the margin is counted; H100: 85.5 GB
    ok = FitVerdict(peak_bytes=10**9, reserve_bytes=0, budget=Budget.parse("colab"))
    assert ok.fits and ok.shortfall_bytes == 0 and "to spare" in ok.line()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_more_optimizer_state_means_smaller_batches(optimizer):
    w = zoo.get("mlp", depth=4, width=512, inputs=512)
    fit = max_batch_size(w, "80MB", optimizer, reserve_bytes=0)
    assert fit.max_batch_size > 0
    if optimizer == "adam":
        assert fit.max_batch_size < max_batch_size(w, "80MB", "sgd", reserve_bytes=0).max_batch_size
