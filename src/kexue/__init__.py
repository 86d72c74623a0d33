"""kexue: techniques from the Scientific Spaces blog (kexue.fm) in PyTorch, each reproduced with measured claims."""

# The one place the version is written: pyproject.toml reads it (setuptools dynamic version) and CHANGELOG.md has
# a section for it (tests/test_packaging.py checks both).
__version__ = "0.1.0"
