"""Let a module that shares its name with its main function be called like that function.

`memfit.data` exports the function `shrink` from the module `memfit.data.shrink`
(and `convert` from `memfit.data.convert`). Python's import system binds the
*module* to the package attribute as soon as the module is imported anywhere, so
`from memfit.data import shrink` would give the module or the function depending on
import order. Making the module callable gives the same behaviour in every order.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable


def make_module_callable(module_name: str, function: Callable) -> None:
    """Make `sys.modules[module_name](...)` call `function(...)`."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    _CallableModule.__call__.__doc__ = function.__doc__
    sys.modules[module_name].__class__ = _CallableModule
