"""The ``local`` provider's edit: a colour grade chosen from the edit prompt, so an edit visibly changes.

The preview is not Kling and cannot follow an instruction; it can make the change visible and
plausible. Words in the prompt pick a grade (night, snow/winter, sunset/warm, black and white,
vintage/sepia, a colour name); any other prompt gets a hue rotation derived from a hash of the prompt
(deterministic: the same prompt always grades the same way, and different prompts differ).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# (words, 3x3 matrix applied to RGB in 0..255, offset added after) - rows give the new R, G, B.
_Matrix = tuple[tuple[float, ...], ...]
_GRADES: list[tuple[tuple[str, ...], _Matrix, tuple[float, float, float]]] = [
    (
        ("night", "dark", "moon", "midnight"),
        ((0.25, 0.05, 0.0), (0.05, 0.30, 0.05), (0.05, 0.15, 0.60)),
        (0, 5, 20),
    ),
    (
        ("snow", "winter", "ice", "frost", "cold"),
        ((0.45, 0.35, 0.2), (0.35, 0.45, 0.2), (0.3, 0.35, 0.45)),
        (60, 65, 80),
    ),
    (
        ("sunset", "warm", "golden", "fire", "autumn", "summer"),
        ((1.1, 0.1, 0.0), (0.05, 0.85, 0.0), (0.0, 0.0, 0.55)),
        (25, 10, 0),
    ),
    (("black and white", "noir", "grayscale", "greyscale", "monochrome"), ((0.3, 0.59, 0.11),) * 3, (0, 0, 0)),
    (
        ("vintage", "sepia", "old film", "retro"),
        ((0.39, 0.77, 0.19), (0.35, 0.69, 0.17), (0.27, 0.53, 0.13)),
        (0, 0, 0),
    ),
]
_COLOURS = {"red": 0.0, "orange": 30.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "purple": 280.0}


def _hue_matrix(degrees: float) -> _Matrix:
    """Rotation of hue about the grey axis (luminance roughly kept)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    third, root = 1 / 3, math.sqrt(1 / 3)
    a = c + (1 - c) * third
    b = third * (1 - c) - root * s
    d = third * (1 - c) + root * s
    return ((a, b, d), (d, a, b), (b, d, a))


def grade_for(prompt: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(name, function) for ``prompt``: the function maps an RGB uint8 frame to its graded copy."""
    text = " ".join(re.findall(r"[a-z]+", prompt.lower()))
    name, matrix, offset = "", None, (0.0, 0.0, 0.0)
    for words, grade_matrix, grade_offset in _GRADES:
        if any(re.search(rf"\b{w}", text) for w in words):
            name, matrix, offset = words[0], grade_matrix, grade_offset
            break
    if matrix is None:
        colour = next((c for c in _COLOURS if re.search(rf"\b{c}\b", text)), None)
        if colour is not None:
            name, matrix = f"tint {colour}", _tint(_COLOURS[colour])
        else:
            degrees = 60 + int(hashlib.sha256(prompt.encode()).hexdigest()[:4], 16) % 240
            name, matrix = f"hue {degrees}", _hue_matrix(degrees)
    return name, _apply(matrix, offset)


def _tint(hue: float) -> _Matrix:
    """Keep the luminance, pull the colour towards ``hue`` (degrees)."""
    r, g, b = (max(0.0, math.cos(math.radians(hue - at))) for at in (0.0, 120.0, 240.0))
    top = max(r, g, b) or 1.0
    r, g, b = (0.35 + 0.75 * v / top for v in (r, g, b))
    luma = (0.3, 0.59, 0.11)
    return tuple(tuple(k * w for w in luma) for k in (r, g, b))


def _apply(matrix: _Matrix, offset: tuple[float, float, float]) -> Callable[[np.ndarray], np.ndarray]:
    import numpy as np

    transform = np.asarray(matrix, dtype=np.float32).T
    shift = np.asarray(offset, dtype=np.float32)

    def apply(rgb: np.ndarray) -> np.ndarray:
        graded = rgb.reshape(-1, 3).astype(np.float32) @ transform + shift
        return np.clip(graded, 0, 255).astype(np.uint8).reshape(rgb.shape)

    return apply
