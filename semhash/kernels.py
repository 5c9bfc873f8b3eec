"""Optional compiled (numba) kernels, imported and compiled on first use.

The modules that hold them (``semhash.index._address_kernel``, ``semhash._vectorize_kernel``)
import numba at the top; their callers keep a numpy path for machines without it.
"""

from __future__ import annotations

import functools
import importlib
from importlib.util import find_spec
from types import ModuleType


def numba_available() -> bool:
    """Whether numba is installed (checked without importing it)."""
    return find_spec("numba") is not None


@functools.cache
def compiled_kernel(module: str) -> ModuleType | None:
    """The kernel module named ``module``, or None when numba cannot be imported."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
