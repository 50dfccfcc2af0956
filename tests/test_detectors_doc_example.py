"""The worked example of docs/DETECTORS.md is a working detector: dropped in as one folder,
it is discovered, fits, saves/loads and exports with parity (run in a subprocess, so the
registry of this test session is untouched)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "DETECTORS.md"

CHECK = textwrap.dedent("""
    import sys, numpy as np
    import pyimgano_deploy.models.detectors as detectors
    detectors.__path__.append(sys.argv[1])
    from pyimgano_deploy.models import list_models, create_model, model_info
    from pyimgano_deploy.exporters.onnx_export import export_module, onnx_outputs
    assert "vision_meanpatch" in list_models(), list_models()
    assert model_info("vision_meanpatch")["metadata"]["memory"] == "positions × feature_dim × 4 bytes"
    rng = np.random.default_rng(0)
    x = np.clip(100 + rng.integers(-20, 20, size=(10, 64, 64, 3)), 0, 255).astype(np.uint8)
    det = create_model("vision_meanpatch", pretrained=False, image_size=64, progress=False).fit(x[:8], input_format="rgb_u8_hwc")
    batch = det.preprocess.batch(list(x[8:]))
    s, m = det.predict_batch(batch)
    det.save(sys.argv[2])
    loaded = type(det).load(sys.argv[2])
    assert np.array_equal(loaded.predict_batch(batch)[0], s)
    export_module(det.inference_module, batch, sys.argv[2] + "/m.onnx")
    xs, _ = onnx_outputs(sys.argv[2] + "/m.onnx", batch)
    assert np.abs(xs - s).max() <= 1e-4 * max(1.0, float(np.abs(s).max())), (xs, s)
    print("ok")
""")


def _blocks(text: str) -> dict[str, str]:
    """The ```python blocks that follow a `.../meanpatch/<file>` line."""
    found = {}
    for match in re.finditer(r"`pyimgano_deploy/models/detectors/meanpatch/(\w+\.py)`:\s*```python\n(.*?)```", text, re.S):
        found[match.group(1)] = match.group(2)
    return found


def test_the_worked_example_is_a_working_detector(tmp_path):
    blocks = _blocks(DOC.read_text(encoding="utf-8"))
    assert set(blocks) == {"spec.py", "model.py"}
    folder = tmp_path / "extra" / "meanpatch"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name, code in blocks.items():
        (folder / name).write_text(code)
    proc = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "extra"), str(tmp_path / "saved")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
