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
#: ``input`` key of the full-scale value the training set declared for its 16-bit files
#: (``dataset.u16_max``; absent when the set was 8-bit). Provenance: the runtime still needs
#: ``u16_max`` named at each call, and warns when it differs.
U16_MAX_KEY = "u16_max"
#: ``input`` key saying whether the run's calibration images (the held-out normals, same camera
#: as the fit images) were ``grey``, in ``colour`` or ``mixed`` (``inputs.source_info.COLOURS``).
#: Provenance: the runtime warns once when an input's colour differs; absent in older bundles.
TRAINED_COLOUR_KEY = "trained_colour"
#: ``input`` key holding ``[min, max]`` of the calibration images' width / height, as stored.
#: Provenance: the runtime warns once when an input's aspect lies outside it
#: (``inputs.source_info.aspect_differs``); absent in older bundles.
TRAINED_ASPECT_KEY = "trained_aspect"

__all__ = ["INPUT_CHANNELS", "INPUT_DTYPE", "INPUT_LAYOUT", "INPUT_NAME", "OUTPUT_DTYPE", "OUTPUT_NAMES", "TRAINED_ASPECT_KEY", "TRAINED_COLOUR_KEY",
           "U16_MAX_KEY"]
