"""The exported model's I/O contract (ARCHITECTURE §3): one name for each constant of it.

``images``: ``uint8 [B, H, W, 3]`` RGB; ``score``: ``float32 [B]``; ``anomaly_map``:
``float32 [B, H, W]``. The exporter names the graph's tensors with these, the manifest checker
requires them, and every engine session feeds and reads them.
"""

from __future__ import annotations

INPUT_NAME = "images"
OUTPUT_NAMES = ("score", "anomaly_map")
INPUT_LAYOUT = "NHWC"
INPUT_DTYPE = "uint8"
INPUT_CHANNELS = "RGB"
OUTPUT_DTYPE = "float32"

__all__ = ["INPUT_CHANNELS", "INPUT_DTYPE", "INPUT_LAYOUT", "INPUT_NAME", "OUTPUT_DTYPE", "OUTPUT_NAMES"]
