"""Plots as data URIs (the HTML report opens from disk with no other file), their sizes, and small thumbnails."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path

__all__ = ["data_uri", "image_size", "thumbnail"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml", ".gif": "image/gif"}


def mime(name: str) -> str:
    """The MIME type of a plot file from its suffix (PNG when unknown: what experiments write)."""
    return _MIME.get(Path(name).suffix.lower(), "image/png")


def data_uri(data: bytes, name: str) -> str:
    """``data:<mime>;base64,...`` for the bytes of file ``name``."""
    return f"data:{mime(name)};base64,{base64.b64encode(data).decode('ascii')}"


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels read from a PNG header, or ``None`` when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return (int(w), int(h)) if w > 0 and h > 0 else None


def thumbnail(data: bytes, *, box: tuple[int, int] = (840, 220)) -> bytes:
    """A PNG that fits in ``box`` pixels (twice a summary card's image area, so sharp on high-DPI screens).

    The full plot is already in the page; a summary card that inlined it a second time would double the file.
    Pillow comes with matplotlib; without it (or for a file it cannot read) the original bytes are returned.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - matplotlib requires Pillow
        return data
    try:
        with Image.open(io.BytesIO(data)) as im:
            scale = min(box[0] / im.width, box[1] / im.height)
            if scale >= 1:
                return data
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            small = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            # A 256-colour palette keeps a plot's flat colours and anti-aliased lines and shrinks the file a lot.
            small = small.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            buf = io.BytesIO()
            small.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return data
    out = buf.getvalue()
    return out if len(out) < len(data) else data
