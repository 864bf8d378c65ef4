"""Estimating training memory without allocating it."""

from memfit.estimator.batch import BatchSizeFit, max_batch_size
from memfit.estimator.fake import estimate
from memfit.estimator.verdict import FitVerdict

__all__ = ["BatchSizeFit", "FitVerdict", "estimate", "max_batch_size"]
