"""Decode speed: the strict reader (``inputs.read_image``: header pixel limit, PNG CRCs, strict
libjpeg-turbo through simplejpeg) against plain OpenCV ``imdecode`` + BGR→RGB, side by side in
one process, on the real images of ``../shared/data`` (bytes pre-read, so disk is not timed);
and the same reader with the record's ``source`` (sha256 of the bytes, ``is_grey``), which is
what ``infer`` runs.

Prints one JSON document: images/s of each decoder per data set (median of ``--repeats`` passes
over every image), their ratios, and whether the decoded pixels are identical; and the time of
``is_grey`` on camera-sized frames (colour, and grey stored as three channels).

    python benchmarks/bench_decode.py [--threads 1] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, emit, header, log, pin_threads  # noqa: E402

DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DATASETS = ("bsd_ballscrew", "hazelnut_toy")
_SUFFIXES = (".jpg", ".jpeg", ".png")


def _files(root: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _SUFFIXES and "ground_truth" not in p.parts)
    return files[:limit] if limit else files


def _passes(decode, blobs: list, repeats: int) -> float:
    """Median images/s over ``repeats`` passes (one warm-up pass first)."""
    import time

    for blob in blobs:
        decode(blob)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for blob in blobs:
            decode(blob)
        rates.append(len(blobs) / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV / BLAS threads (decoding itself is single-threaded)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="40 images per data set, 2 passes")
    args = parser.parse_args()
    threads = pin_threads(args.threads)

    import cv2
    import numpy as np

    from pyimgano_deploy.inputs import decode_image
    from pyimgano_deploy.inputs.reader import decode_image_source
    from pyimgano_deploy.inputs.source_info import file_source, is_grey

    cv2.setNumThreads(threads)
    doc = header("decode", args, threads)
    repeats = 2 if args.quick else args.repeats
    results = {}
    for name in DATASETS:
        root = DATA_ROOT / name
        if not root.is_dir():
            log(f"skipping {name}: {root} not found")
            continue
        files = _files(root, 40 if args.quick else None)
        blobs = [f.read_bytes() for f in files]
        log(f"{name}: {len(files)} files")

        def opencv(blob: bytes) -> np.ndarray:
            return cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

        def strict(blob: bytes) -> np.ndarray:
            return decode_image(blob, name="bench")

        def with_source(blob: bytes) -> np.ndarray:
            return decode_image_source(blob, name="bench")[0]

        identical = sum(bool(np.array_equal(opencv(b), strict(b))) for b in blobs)
        cv_rate, strict_rate = _passes(opencv, blobs, repeats), _passes(strict, blobs, repeats)
        source_rate = _passes(with_source, blobs, repeats)
        # the source alone (digest + is_grey), timed on its own: the whole-pass rates above move by more
        # than it costs from one pass to the next on a shared VM
        pairs = [(b, strict(b)) for b in blobs]
        source_alone = _passes(lambda pair: file_source(*pair), pairs, repeats)
        results[name] = {
            "images": len(files),
            "formats": sorted({f.suffix.lower() for f in files}),
            "megapixels_per_image": round(float(np.mean([opencv(b).shape[0] * opencv(b).shape[1] for b in blobs[:8]])) / 1e6, 3),
            "opencv_images_per_s": round(cv_rate, 1),
            "strict_images_per_s": round(strict_rate, 1),
            "strict_over_opencv": round(strict_rate / cv_rate, 3),
            "with_source_images_per_s": round(source_rate, 1),
            "source_alone_ms_per_image": round(1e3 / source_alone, 3),
            "pixels_identical": f"{identical}/{len(blobs)}",
        }
        log(f"{name}: {results[name]}")
    doc["results"] = results
    doc["is_grey_ms"] = _grey_check_times(np, is_grey, repeats=20 if args.quick else 100)
    emit(doc)


def _grey_check_times(np, is_grey, repeats: int) -> dict[str, float]:  # noqa: ANN001 - modules passed in after pin_threads
    """Median ms of ``is_grey`` on random frames: 1130 × 460 (bsd_ballscrew) and 2448 × 2048 (5 MP)."""
    import time

    out = {}
    rng = np.random.default_rng(0)
    for h, w in ((460, 1130), (2048, 2448)):
        colour = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        for kind, frame in (("colour", colour), ("grey_in_3_channels", np.repeat(colour[..., :1], 3, axis=2))):
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                is_grey(frame)
                times.append(time.perf_counter() - t)
            out[f"{w}x{h}_{kind}"] = round(statistics.median(times) * 1e3, 3)
    return out


if __name__ == "__main__":
    main()
