"""PET / P-tuning templates (pure string logic) and the LM kind of a transformers model.

Article: https://kexue.fm/archives/8295 (Su); PET: arXiv 2001.07676. A template lays out literal words, the
input ``{text}``, continuous prompt vectors ``{pN}`` and the label slot ``{label}`` in any order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["LMKind", "Template", "lm_kind"]

LMKind = Literal["causal", "mlm"]
_FIELD = re.compile(r"\{(text|label|p\d*)\}")


@dataclass(frozen=True)
class Template:
    """A PET / P-tuning pattern: literal text, ``{text}``, ``{label}`` and ``{pN}`` (N prompt vectors) in any order.

    Examples: Su's BERT template ``"{p4}{label}{p4}{text}"``; his GPT template ``"{p4}{text}{p4}{label}"``; a
    hand-written PET pattern ``"{text} All in all, it was {label}."``. ``{p}`` means one vector. Whitespace in
    literal parts is kept as written (it matters for byte-level BPE tokenizers).

    Args:
        pattern: the template string. It must contain ``{label}`` and ``{text}`` exactly once.

    Raises:
        ValueError: ``{label}`` or ``{text}`` missing or repeated, or an unknown ``{field}``.

    Example:
        >>> Template("{p2} {text} It was {label}.").num_prompts
        2
    """

    pattern: str

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str):
            raise TypeError(f"template pattern must be a str, got {type(self.pattern).__name__}")
        fields = [m.group(1) for m in _FIELD.finditer(self.pattern)]
        if fields.count("label") != 1:
            raise ValueError(f"template must contain the label slot '{{label}}' exactly once, got {self.pattern!r}")
        if fields.count("text") != 1:
            raise ValueError(f"template must contain '{{text}}' exactly once, got {self.pattern!r}")
        leftover = _FIELD.sub("", self.pattern)
        if "{" in leftover or "}" in leftover:
            raise ValueError(
                f"template {self.pattern!r} has an unknown field; allowed: {{text}}, {{label}}, {{p}}, {{pN}}"
            )

    @property
    def parts(self) -> list[tuple[str, str | int]]:
        """``[(kind, value)]`` with kind ``"literal"`` (str), ``"text"``, ``"label"`` or ``"prompt"`` (count)."""
        out: list[tuple[str, str | int]] = []
        pos = 0
        for m in _FIELD.finditer(self.pattern):
            if m.start() > pos:
                out.append(("literal", self.pattern[pos : m.start()]))
            f = m.group(1)
            if f.startswith("p"):
                out.append(("prompt", int(f[1:]) if len(f) > 1 else 1))
            else:
                out.append((f, f))
            pos = m.end()
        if pos < len(self.pattern):
            out.append(("literal", self.pattern[pos:]))
        return out

    @property
    def num_prompts(self) -> int:
        """Total number of prompt vectors ``m``."""
        return sum(int(v) for k, v in self.parts if k == "prompt")

    def label_is_last(self) -> bool:
        """Whether nothing but whitespace follows the label slot (required for causal LMs)."""
        kinds = self.parts
        i = [k for k, _ in kinds].index("label")
        return all(k == "literal" and not str(v).strip() for k, v in kinds[i + 1 :])


def lm_kind(model: nn.Module) -> LMKind:
    """``"causal"`` or ``"mlm"`` from a transformers model's class name (``...ForCausalLM`` / ``...ForMaskedLM``).

    Raises:
        TypeError: the model is neither (e.g. a bare ``BertModel`` or a classifier).
    """
    name = type(model).__name__
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal"
    if name.endswith("ForMaskedLM"):
        return "mlm"
    raise TypeError(
        f"unknown model type {name}: expected a transformers *ForCausalLM or *ForMaskedLM model (pass kind= "
        "to override)"
    )
