"""nn.Modules with parameters: backbones, heads, encoders."""

from .cnn import SmallCNN

__all__ = ["SmallCNN"]
from .prompt import PromptEncoder, PromptKind, TokenRows, splice_prompts

__all__ += ["PromptEncoder", "PromptKind", "TokenRows", "splice_prompts"]
