"""PEFT-style adapter folders for :class:`~kexue.methods.PTuning`: a JSON config and safetensors weights.

Files: ``adapter_config.json`` and ``adapter_model.safetensors``.

The layout follows PEFT's ``PeftModel.save_pretrained`` (a JSON config and the trained tensors in safetensors,
no base-model weights), but the config is kexue's own (``"library": "kexue"``, no ``peft_type``) so PEFT's
loaders reject it instead of misreading it: prompts here sit anywhere in a template, PEFT only prepends.
safetensors is imported when a folder is read or written, not at import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "read_adapter", "write_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LIBRARY, METHOD = "kexue", "p-tuning"


def write_adapter(directory: str | Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    """Write ``config`` and ``tensors`` into ``directory`` (created if needed); returns the folder."""
    from safetensors.torch import save_file

    out = Path(directory)
    if out.is_file():
        raise ValueError(f"save_directory must be a folder, got the file {str(out)!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps({"library": LIBRARY, "method": METHOD, **config}, indent=2) + "\n")
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(flat, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    return out


def read_adapter(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config, tensors)`` of a folder written by :func:`write_adapter`.

    Raises:
        FileNotFoundError: the folder lacks either file.
        ValueError: the config is not a kexue P-tuning adapter.
    """
    from safetensors.torch import load_file

    src = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{str(src / name)!r} not found: not a P-tuning adapter folder")
    config = json.loads((src / CONFIG_NAME).read_text())
    if config.get("library") != LIBRARY or config.get("method") != METHOD:
        raise ValueError(
            f"{str(src / CONFIG_NAME)!r} is not a kexue P-tuning adapter (library={config.get('library')!r}, "
            f"method={config.get('method')!r})"
        )
    return config, load_file(str(src / WEIGHTS_NAME), device="cpu")
