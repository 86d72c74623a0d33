"""losses layer."""

from . import multitask
