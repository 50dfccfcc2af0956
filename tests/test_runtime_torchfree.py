"""The runtime must run a bundle without torch or onnx ever being imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
from bundle_factory import build_tiny_bundle, random_images

SCRIPT = r"""
import json, sys
import numpy as np
from pyimgano_deploy.runtimes import load_bundle, validate_bundle
from pyimgano_deploy.cli.infer_cmd import infer  # the CLI module must be torch-free too
from pyimgano_deploy.cli.validate_cmd import validate
from pyimgano_deploy.cli.recalibrate_cmd import recalibrate
from pyimgano_deploy.runtimes.recalibration import recalibrate_bundle
rt = load_bundle(sys.argv[1])
res = rt.infer(np.zeros((2, 32, 40, 3), np.uint8), input_format="rgb_u8_hwc", include_maps=True)
report = validate_bundle(sys.argv[1])
recalibrated = recalibrate_bundle(sys.argv[1], sys.argv[2:], sys.argv[1] + "_line")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "tensorrt", "pycuda"))
print(json.dumps({"ok": [r.ok for r in res], "exit": report.exit_code, "recalibrated": recalibrated.digest, "heavy": heavy}))
"""


def test_runtime_never_imports_torch_or_onnx(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "b")
    images = []
    for i, image in enumerate(random_images(2, 32, 40, seed=3)):
        images.append(str(tmp_path / f"{i}.png"))
        assert cv2.imwrite(images[-1], image)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), *images],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] == [True, True]
    assert out["exit"] == 0
    assert out["recalibrated"].startswith("sha256:")
    assert out["heavy"] == [], f"torch-free runtime imported {out['heavy']}"
