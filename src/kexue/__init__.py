"""kexue: techniques from the Scientific Spaces blog (kexue.fm) in PyTorch, each reproduced with measured claims."""

__version__ = "0.1.0"
