"""int8 engines and the re-ranked nearest-neighbour head against fp32, side by side in one process.

For each real category (``--categories``; generated images in ``--quick`` mode) it trains the
CLI-default PatchCore and PaDiM, then reports:

- ``int8_gate``: ``export --precision int8`` (static QDQ, calibration split): passed, or the
  gate's numbers when it refuses (a refused int8 engine is never shipped);
- ``engine_img_s``: the fp32 graph, its int8 quantisation (measured even when the gate refuses
  it) and the re-ranked PatchCore graphs, at batch 1 and 8 on golden images (engine only);
- ``whole_infer``: ``infer``-path images/s over the test split for the fp32 and re-ranked
  PatchCore bundles, image AUROC of each, and the share of identical labels;
- ``rerank_misses``: per patch query, how often the true nearest bank row is not among the
  ``c`` candidates, and the image-score error on the images where any query missed;
- ``gemm``: the fp32 GEMM rate (ONNX Runtime MatMul) and the VNNI int8 rate (MatMulInteger,
  uint8 × int8 → int32) of this CPU.

    python benchmarks/bench_int8.py --root ../shared/data --categories bsd_ballscrew,hazelnut_toy --threads 2
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as C
from _rundir import timed_infer, train_cli_default

RERANK = ((16, 64), (8, 64))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--categories", default="bsd_ballscrew,hazelnut_toy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models")
    return p.parse_args(argv)


def int8_gemm(n: int, threads: int) -> dict[str, Any]:
    """MatMulInteger (uint8 × int8 → int32) GOPS of ONNX Runtime on n × n, and fp32 MatMul's."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    rates = {}
    for name, op, ta, tb, a, b in (
        ("fp32_matmul_gflops", "MatMul", TensorProto.FLOAT, TensorProto.FLOAT,
         rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)),
        ("int8_matmulinteger_gops", "MatMulInteger", TensorProto.UINT8, TensorProto.INT8,
         rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8)),
    ):
        out = TensorProto.FLOAT if op == "MatMul" else TensorProto.INT32
        graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], "g",
                                  [helper.make_tensor_value_info("A", ta, [n, n]), helper.make_tensor_value_info("B", tb, [n, n])],
                                  [helper.make_tensor_value_info("Y", out, [n, n])])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                    sess_options=opts, providers=["CPUExecutionProvider"])
        times = C.repeat_times(lambda: sess.run(None, {"A": a, "B": b}), warmup=1, repeats=5, min_time_s=1.0)
        rates[name] = round(2 * n**3 / min(times) / 1e9, 1)
    rates["int8_over_fp32"] = round(rates["int8_matmulinteger_gops"] / rates["fp32_matmul_gflops"], 2)
    return {"n": n, **rates}


def engine_rate(path: Path, images: Any, threads: int) -> dict[str, float]:
    import numpy as np

    from pyimgano_deploy.runtimes.onnx_session import OnnxSession

    session = OnnxSession(path, intra_op_threads=threads)
    out = {}
    for batch in (1, 8):
        x = np.resize(images, (batch, *images.shape[1:]))
        times = C.repeat_times(lambda: session.run(x), warmup=1, repeats=3, min_time_s=1.5)
        out[f"batch_{batch}"] = round(batch / min(times), 1)
    return out


def whole_infer(bundle: Path, paths: list[str], threads: int) -> tuple[float, list[Any]]:
    """(images/s, results) of the whole ``infer`` path."""
    seconds, items = timed_infer(bundle, paths, threads)
    return round(len(paths) / seconds, 2), [item.result for item in items]


def rerank_misses(detector: Any, paths: list[str], candidates: int, dim: int) -> dict[str, Any]:
    """Eager: share of patch queries whose true nearest row is not a candidate; image-score error."""
    import numpy as np
    import torch

    from pyimgano_deploy.inputs import read_image
    from pyimgano_deploy.models.detectors.reranked_distance import RerankedNearestNeighbourDistance

    module = detector.inference_module
    full = module.scorer.distance
    rr = RerankedNearestNeighbourDistance(full.bank, k=full.k, candidates=candidates, projection_dim=dim)
    missed = total = 0
    errors = []
    with torch.no_grad():
        for i in range(0, len(paths), 8):
            batch = torch.from_numpy(detector.preprocess.batch([read_image(p) for p in paths[i : i + 8]]))
            emb = module.embed(batch)
            q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
            _, true_idx = full.nearest(q)
            _, cand = rr._candidate_sq_distances(q.float())
            miss = ~(cand == true_idx.unsqueeze(1)).any(dim=1)
            missed += int(miss.sum())
            total += int(miss.numel())
            per_image = miss.reshape(emb.shape[0], -1).any(dim=1)
            if per_image.any():
                swapped = copy.deepcopy(module)
                swapped.scorer.distance = rr
                s_full, _ = module(batch)
                s_rr, _ = swapped(batch)
                rel = ((s_rr - s_full).abs() / s_full.abs().clamp(min=1e-12))[per_image]
                errors += rel.tolist()
    return {"candidates": candidates, "projection_dim": dim, "queries": total, "missed_share": missed / max(total, 1),
            "images_with_a_miss": len(errors), "max_rel_image_score_error": max(errors) if errors else 0.0,
            "mean_rel_image_score_error": float(np.mean(errors)) if errors else 0.0}


def _auroc(results: list[Any], paths: list[str]) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = [0 if "/good/" in p else 1 for p in paths]
    return round(float(roc_auc_score(y, [r.score for r in results])), 4) if 0 < sum(y) < len(y) else None


def category(category_dir: Path, work: Path, threads: int, quick: bool) -> dict[str, Any]:
    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.bundles.parity import ParityError
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run, golden_batch
    from pyimgano_deploy.exporters.int8_quantize import quantize_int8
    from pyimgano_deploy.exporters.run_source import resolve_run

    paths = sorted(str(p) for p in (category_dir / "test").rglob("*") if p.is_file())
    doc: dict[str, Any] = {"test_images": len(paths)}
    for name in ("vision_patchcore", "vision_padim"):
        run = train_cli_default(name, category_dir, work, quick=quick)
        out = work / "bundles" / f"{category_dir.name}_{name}"
        base = export_run(run, out / "fp32", ExportOptions(force=True), log=C.log).bundle_dir
        entry: dict[str, Any] = {}
        try:
            result = export_run(run, out / "int8", ExportOptions(precision="int8", force=True), log=C.log)
            entry["int8_gate"] = {"passed": True, **result.parity["int8"].to_manifest()}
        except ParityError as exc:
            last = str(exc).strip().splitlines()[-1]
            entry["int8_gate"] = {"passed": False, "summary": last}
        source = resolve_run(run)
        detector = source.load_detector()
        golden = read_bundle(base).load_golden()["images"]
        calib = golden_batch(source, detector.preprocess, min(64, len(source.calibration_inputs)), 0)
        quantize_int8(base / "model.onnx", work / "q.onnx", calib, detector.inference_module.fp32_scopes)
        rates = {"fp32": engine_rate(base / "model.onnx", golden, threads), "int8_ungated": engine_rate(work / "q.onnx", golden, threads)}
        if name == "vision_patchcore":
            fp32_rate, fp32_results = whole_infer(base, paths, threads)
            entry["whole_infer"] = {"fp32": {"images_per_s": fp32_rate, "image_auroc": _auroc(fp32_results, paths)}}
            entry["rerank_misses"] = []
            for c, r in RERANK:
                rr = export_run(run, out / f"rr{c}", ExportOptions(nn_rerank=c, nn_rerank_dim=r, force=True), log=C.log).bundle_dir
                rates[f"rerank_c{c}_r{r}"] = engine_rate(rr / "model.onnx", golden, threads)
                rate, results = whole_infer(rr, paths, threads)
                entry["whole_infer"][f"rerank_c{c}_r{r}"] = {
                    "images_per_s": rate, "vs_fp32": round(rate / fp32_rate, 3), "image_auroc": _auroc(results, paths),
                    "labels_identical_share": sum(a.label == b.label for a, b in zip(results, fp32_results)) / len(paths)}
                entry["rerank_misses"].append(rerank_misses(detector, paths, c, r))
            entry["bank"] = list(detector.inference_module.scorer.distance.bank.shape)
        entry["engine_img_s"] = rates
        doc[name] = entry
    return doc


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(1 if args.quick else args.threads)
    C.pin_torch_threads(threads)
    doc = C.header("bench_int8", args, threads)
    doc["gemm"] = int8_gemm(512 if args.quick else 2048, threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp:
        work = Path(tmp)
        if args.quick:
            from pyimgano_deploy.datasets import generate_synthetic_dataset

            dirs = [Path(generate_synthetic_dataset(work / "data", seed=0, n_train=12, n_test=8, size=64))]
        else:
            dirs = [args.root / c for c in args.categories.split(",")]
        for category_dir in dirs:
            C.log(f"category {category_dir.name}")
            results[category_dir.name] = category(category_dir, work, threads, args.quick)
    doc.update({"categories": results, "threads": threads})
    return doc


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
