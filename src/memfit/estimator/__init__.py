"""Estimating training memory without allocating it."""

from memfit.estimate.batch import BatchSizeFit, max_batch_size
from memfit.estimate.fake import estimate
from memfit.estimate.verdict import FitVerdict

__all__ = ["BatchSizeFit", "FitVerdict", "estimate", "max_batch_size"]
