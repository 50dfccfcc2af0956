"""Workbench HTML report: self-contained file, SVG plots, threshold line, images, escaping, NaN."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyimgano_deploy.postprocess.thresholds import calibrate_quantile
from pyimgano_deploy.workbench.metrics import evaluate_image_level
from pyimgano_deploy.workbench.report_html import (
    overlay_anomaly_map,
    select_worst_cases,
    write_report_html,
)
from pyimgano_deploy.workbench.svg_plots import HistGroup, histogram_plot, nice_ticks


def _sample(seed: int = 0, n: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    y = np.array([0] * (n // 2) + [1] * (n - n // 2))
    s = rng.normal(size=n) + 1.5 * y
    names = [f"img_{i:02d}.png" for i in range(n)]
    names[0] = "<script>alert('x')</script>.png"
    return {"y": y, "s": s, "names": names, "rng": rng}


def _cases(d: dict, idx: list[int]) -> list[dict]:
    out = []
    for i in idx:
        img = d["rng"].integers(0, 255, (40, 48, 3), dtype=np.uint8)
        amap = d["rng"].random((20, 24)).astype(np.float32)  # smaller than the image: resized
        out.append({"name": d["names"][i], "score": float(d["s"][i]), "y_true": int(d["y"][i]),
                    "image_rgb_u8": img, "anomaly_map": amap})
    return out


def _write(tmp_path: Path, d: dict, metrics: dict, threshold: float) -> str:
    cal = calibrate_quantile(d["s"][d["y"] == 0], quantile=0.9, source_split="calib",
                             n_images=int((d["y"] == 0).sum()), code_path="tests")
    idx = select_worst_cases(d["names"], d["y"], d["s"], threshold, k=2)
    path = write_report_html(
        tmp_path / "sub" / "report.html", title="Run <demo> & co", metrics=metrics,
        thresholds={"image": cal, "pixel": None}, y_true=d["y"], scores=d["s"],
        threshold=threshold, worst_cases=_cases(d, idx),
    )
    assert path.is_file()
    return path.read_text(encoding="utf-8")


def test_report_contents(tmp_path: Path) -> None:
    d = _sample()
    d["s"][0] = 10.0  # the <script> normal is the worst false positive
    thr = 1.0
    metrics = {"image": evaluate_image_level(d["y"], d["s"], thr), "pixel": {"auroc": 0.91, "aupro": None}}
    text = _write(tmp_path, d, metrics, thr)
    assert text.count("<svg") == 3 and "Precision–recall" in text and "<polyline" in text and "class='bar'" in text
    assert "class='threshold-line'" in text and "AUROC = " in text
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 8  # 4 cases x (image + overlay)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(images[0]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (40, 48, 3)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "Run &lt;demo&gt; &amp; co" in text
    assert "false positive" in text and "quantile" in text and "calib" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # no external assets
    assert "n/a" in text  # pixel aupro None, pixel threshold missing


def test_report_with_nan_metrics_and_single_class(tmp_path: Path) -> None:
    d = _sample(1)
    d["y"][:] = 0
    metrics = evaluate_image_level(d["y"], d["s"], 0.5)
    assert np.isnan(metrics["auroc"])
    text = _write(tmp_path, d, metrics, float("nan"))
    assert "n/a" in text and ">nan<" not in text.lower()
    assert "n/a: needs normal and anomalous images" in text  # ROC placeholder
    assert "threshold-line" not in text  # no finite threshold → no line


def test_select_worst_cases_order() -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    y = [0, 0, 0, 1, 1, 1]
    s = [0.2, 0.9, 0.6, 0.1, 0.8, 0.4]
    # normals by score desc (b=0.9 is a false positive at thr 0.5, then c=0.6 FP, then a);
    # anomalies by score asc (d=0.1 FN, f=0.4 FN, then e)
    assert select_worst_cases(names, y, s, 0.5, k=2) == [1, 2, 3, 5]
    assert select_worst_cases(names, y, s, 0.5, k=10) == [1, 2, 0, 3, 5, 4]
    with pytest.raises(ValueError, match="same length"):
        select_worst_cases(names[:2], y, s, 0.5)


def test_overlay_and_svg_helpers() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    amap = np.zeros((8, 8), np.float32)
    amap[0, 0] = 1.0
    over = overlay_anomaly_map(img, amap)
    assert over.shape == (8, 8, 3) and over.dtype == np.uint8
    assert over[0, 0, 0] > over[0, 0, 2]  # hot = red in RGB
    assert over[7, 7, 2] > over[7, 7, 0]  # cold = blue
    assert overlay_anomaly_map(img, np.ones((4, 4))).shape == (8, 8, 3)  # constant map ok
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    svg = histogram_plot([HistGroup([], "empty")], title="t", xlabel="x", vline=0.5)
    assert svg.startswith("<svg") and "n/a" in svg
