"""Imports of optional dependencies, failing with the ``pip install`` line that brings them.

The library (``ops``, ``losses``, ``regularizers``, ``modules``, ``methods``, ``train``, ``data``) needs only
torch, numpy and tqdm. The experiments and their report need the ``experiments`` extra (matplotlib, scipy);
pretrained language models need the ``text`` extra (transformers and its GGUF / safetensors readers). Every import
of those goes through :func:`optional_import`, so a missing one says which extra to install.

This module imports only the standard library and may be used by every layer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "optional_import"]

#: The extra of ``pyproject.toml`` that installs each optional top-level module.
EXTRAS: dict[str, str] = {
    "matplotlib": "experiments",
    "scipy": "experiments",
    "transformers": "text",
    "gguf": "text",
    "accelerate": "text",
    "safetensors": "text",
    "sentencepiece": "text",
}


def optional_import(name: str, *, purpose: str) -> ModuleType:
    """Import module ``name``, or raise an ``ImportError`` that names the extra which installs it.

    Args:
        name: a dotted module name whose top-level package is a key of :data:`EXTRAS`, e.g. ``"scipy.stats"``.
        purpose: what needs it, for the message, e.g. ``"the statistics of the experiments"``.

    Returns:
        The imported module.

    Raises:
        ImportError: the module is not installed; the message holds ``pip install 'kexue[<extra>]'``.
        KeyError: ``name`` is not a known optional dependency (a bug in kexue, not in the caller's setup).

    Examples:
        >>> optional_import("scipy.stats", purpose="the statistics of the experiments").__name__
        'scipy.stats'
    """
    extra = EXTRAS[name.partition(".")[0]]
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs {name.partition('.')[0]!r}, which is not installed: pip install 'kexue[{extra}]'"
        ) from e
