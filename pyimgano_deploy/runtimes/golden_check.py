"""An opened engine's golden self-test: the export's parity gate, applied on this machine.

``validate`` reports it as its ``golden`` check. ``open_runtime`` runs it before an int8 engine
serves anything: int8 arithmetic is done by the CPU's integer kernels, which differ between CPU
generations (x86 without VNNI adds uint8 × int8 products in a saturating int16), so an int8
engine that passed its gate on the export machine is checked again where it runs.
"""

from __future__ import annotations

import numpy as np

from pyimgano_deploy.bundles.environment import cpu_features
from pyimgano_deploy.bundles.parity import ParityReport, compare_outputs
from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineParityError, EngineRunError
from pyimgano_deploy.runtimes.runtime import Runtime

#: precisions whose engine is checked against golden.npz whenever it is opened
SELF_TESTED_PRECISIONS = frozenset({"int8"})


class GoldenShapeError(ValueError):
    """The engine's anomaly maps do not have the golden maps' shape."""


def engine_outputs(runtime: Runtime, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores ``[N]``, maps ``[N, H, W]``) of ``runtime``'s engine for preprocessed uint8
    ``images [N, H, W, 3]``, in runtime-sized batches; ``EngineRunError`` when a batch fails."""
    parts = [runtime.run_batch(images[i : i + runtime.batch_size]) for i in range(0, len(images), runtime.batch_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def golden_parity(runtime: Runtime, golden: dict[str, np.ndarray], precision: str) -> ParityReport:
    """The export's parity gate, applied to ``runtime``'s engine on the golden images."""
    got_score, got_map = engine_outputs(runtime, golden["images"])
    if got_map.shape != golden["anomaly_map"].shape:
        raise GoldenShapeError(f"anomaly_map shape {list(got_map.shape)} differs from golden {list(golden['anomaly_map'].shape)}")
    return compare_outputs(golden["score"], golden["anomaly_map"], got_score, got_map,
                           threshold=runtime.threshold, precision=precision)


def require_golden_parity(runtime: Runtime) -> ParityReport:
    """Run :func:`golden_parity` for ``runtime``'s precision; ``EngineParityError`` naming the
    engine, the gate's numbers and what to do when it fails here, ``EngineLoadError`` when the
    engine cannot run the golden images at all."""
    info = runtime.engine_info
    precision = str(info.get("precision", "fp32"))
    try:
        report = golden_parity(runtime, runtime.bundle.load_golden(), precision)
    except EngineRunError as exc:
        raise EngineLoadError(f"{info.get('file')} ({precision}) failed on the bundle's golden images: {exc}") from exc
    except GoldenShapeError as exc:
        raise EngineParityError(f"{info.get('file')} ({precision}): {exc}") from exc
    if not report.passed:
        raise EngineParityError(
            f"{info.get('file')} ({precision}) does not reproduce the bundle's golden outputs on this machine"
            f"{cpu_note(runtime.bundle.manifest)}: "
            f"max |Δscore| {report.max_abs_score:.3g} (gate {report.tolerance['score_abs']:.3g}), max |Δmap| "
            f"{report.max_abs_map:.3g} (gate {report.tolerance['map_abs']:.3g}), labels identical: "
            f"{report.labels_identical}; {refusal_advice(precision)}"
        )
    return report


def refusal_advice(precision: str) -> str:
    """What to do when ``precision``'s engine fails the gate on this machine (``infer`` and ``validate``)."""
    if precision == "int8":
        return ("this CPU's integer kernels differ from the export machine's. Run the fp32 engine "
                "(--precision fp32), or re-export int8 with this version of pyimgano-deploy, whose 7-bit "
                "codes give the same results on x86 CPUs with and without VNNI")
    return "run another engine, or run `validate` on this machine for the table"


def _isa(features: object) -> str:
    isa = features.get("isa") if isinstance(features, dict) else None
    return "+".join(isa) if isa else "unknown instruction sets"


def cpu_note(manifest: dict) -> str:
    """" (exported on a CPU with …, this one has …)" when the manifest recorded the export CPU's."""
    exported = (manifest.get("environment") or {}).get("cpu_features")
    if not exported:
        return ""
    return f" (exported on a CPU with {_isa(exported)}, this one has {_isa(cpu_features())})"
