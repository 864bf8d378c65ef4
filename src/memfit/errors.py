"""Every error memfit raises on purpose.

The command line turns any of these into one line on stderr and a non-zero
exit; the message is written for that line, so it says what to do.

    MemfitError
    ├── BudgetError            a budget string that is not a size or a preset
    ├── WorkloadError          a model spec that cannot be loaded or built
    │   └── UnknownOptimizerError  an optimizer name memfit does not know
    ├── MeasureError           a training step that could not be measured
    ├── EstimateError          a model that cannot run on fake tensors
    ├── PlanError              a plan that cannot be made or applied
    ├── TechniqueError         a technique that cannot be applied to this model
    ├── OutOfBudgetError       a measured peak above the budget
    ├── DataError              bad input data
    │   ├── LossyConversionError  a dtype change that would alter values
    │   ├── OutOfRangeError       values outside a fitted shrink plan's range
    │   ├── ConvertError          a file that cannot be converted
    │   └── StreamError           a stream that cannot be read or resumed
    ├── CompressError          a model that cannot be compressed as asked
    ├── OffloadError           offloaded state that is missing or half written
    ├── DistributedError       a sharded run that cannot be set up
    ├── ReportError            a result that cannot be drawn, or a report that cannot be written
    └── MissingDependencyError an optional package that is not installed
"""

from __future__ import annotations


class MemfitError(Exception):
    """Base class: catch this to catch every error memfit raises on purpose."""


class BudgetError(MemfitError, ValueError):
    pass


class WorkloadError(MemfitError, ValueError):
    pass


class UnknownOptimizerError(WorkloadError):
    pass


class MeasureError(MemfitError, RuntimeError):
    pass


class EstimateError(MemfitError, RuntimeError):
    pass


class PlanError(MemfitError, RuntimeError):
    pass


class TechniqueError(MemfitError, RuntimeError):
    pass


class OutOfBudgetError(MemfitError, RuntimeError):
    pass


class DataError(MemfitError, ValueError):
    pass


class LossyConversionError(DataError):
    pass


class OutOfRangeError(DataError):
    pass


class ConvertError(DataError):
    pass


class StreamError(DataError):
    pass


class CompressError(MemfitError, RuntimeError):
    pass


class OffloadError(MemfitError, RuntimeError):
    pass


class DistributedError(MemfitError, RuntimeError):
    pass


class ReportError(MemfitError, ValueError):
    pass


class MissingDependencyError(MemfitError, ImportError):
    """An optional dependency is missing; the message names the pip command."""


def require(module: str, extra: str):
    """Import an optional dependency, or fail with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'memfit[{extra}]'"
        ) from exc
