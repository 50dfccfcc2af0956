"""The parity gate, one rule for ``export`` and ``validate``: engine outputs must match the eager
outputs of the same golden inputs. Torch-free, so the target machine applies exactly the gate
the export applied (``validate`` recomputes the tolerances from golden.npz and the threshold;
it never takes looser ones from the manifest).

Gate rule 2 (``GATE_RULE``), per precision:
- fp32: max |Δscore| ≤ 1e-4 × max(1, |threshold|) and
  max |Δmap| ≤ 1e-3 × (eager map range over the golden images).
- fp16: max |Δscore| ≤ 2e-2 × *threshold scale* and max |Δmap| ≤ 5e-2 × map range.
  Half-precision backbones move features by ~1e-3 relative and the distance head amplifies
  that, so 2 % of the threshold scale is the documented bound. The threshold scale is
  max(|threshold|, eager golden score range): the scores' own unit, so a detector whose
  scores are 0.01–0.02 (reconstruction errors) is held to the same relative bound as one
  whose scores are distances near 3. (Rule 1 used max(1, |threshold|), which let fp16 move
  small scores by more than their whole range.)
- int8: max |Δscore| ≤ 5e-2 × threshold scale and max |Δmap| ≤ 1e-1 × map range. Each
  quantised activation is rounded to 1/255 of its calibrated range and the rounding compounds
  through the layers, so the bound is wider than fp16's; labels must still agree.
- Labels, every precision: identical on every golden image whose eager score is farther than
  ``score_abs`` from the threshold. An image inside that band (a *boundary* image: the golden
  set is drawn from the calibration split that defines the threshold, so one image usually
  sits on it) may change label within the allowed score error; it is listed, and its score
  error is still held to ``score_abs``. Without a threshold there are no labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pyimgano_deploy.bundles.exit_codes import EXIT_PARITY

#: version of the rule below; recorded with every tolerance so validate can tell which rule an
#: older bundle was gated with
GATE_RULE = 2
TOLERANCES = {
    "fp32": {"score_rel": 1e-4, "map_rel": 1e-3},
    "fp16": {"score_rel": 2e-2, "map_rel": 5e-2},
    "int8": {"score_rel": 5e-2, "map_rel": 1e-1},
}


class ParityError(RuntimeError):
    """Exported and eager outputs disagree beyond the tolerance; the message holds a table."""

    exit_code = EXIT_PARITY


@dataclass(frozen=True)
class ParityReport:
    precision: str
    n_images: int
    max_abs_score: float
    max_rel_score: float
    max_abs_map: float
    map_range: float
    labels_identical: bool
    tolerance: dict
    passed: bool
    per_image: list
    #: golden indices whose eager score lies within ``score_abs`` of the threshold (labels not compared)
    boundary: tuple = ()

    def to_manifest(self) -> dict:
        d = asdict(self)
        d.pop("per_image")
        d.pop("passed")
        d["boundary"] = list(self.boundary)
        return d

    def table(self) -> str:
        rows = [f"{'#':>3} {'eager score':>14} {'exported':>14} {'|Δ|':>10} {'labels':>8} {'max|Δmap|':>10}"]
        for r in self.per_image:
            rows.append(
                f"{r['index']:>3} {r['eager_score']:>14.6f} {r['exported_score']:>14.6f} {r['abs_score']:>10.2e} "
                f"{r['eager_label']!s:>3}/{r['exported_label']!s:<4} {r['abs_map']:>10.2e}"
            )
        tol = self.tolerance
        rows.append(
            f"{self.precision}: max|Δscore|={self.max_abs_score:.3e} (tolerance {tol['score_abs']:.3e}), "
            f"max|Δmap|={self.max_abs_map:.3e} (tolerance {tol['map_abs']:.3e}), labels identical: {self.labels_identical}"
            + (f" (boundary images {list(self.boundary)} within {tol['score_abs']:.3e} of the threshold not compared)" if self.boundary else "")
        )
        return "\n".join(rows)


def score_scale(precision: str, eager_scores: np.ndarray, threshold: float | None) -> float:
    """The unit ``score_rel`` multiplies (see the module docstring); without a threshold the
    largest eager score stands in for it."""
    es = np.asarray(eager_scores, np.float64)
    ref = abs(threshold) if threshold is not None else (float(np.abs(es).max()) if es.size else 0.0)
    if precision == "fp32":
        return max(1.0, ref)
    spread = float(es.max() - es.min()) if es.size else 0.0
    return max(ref, spread, 1e-12)


def gate_tolerances(precision: str, eager_scores: np.ndarray, eager_maps: np.ndarray, threshold: float | None) -> dict:
    """The gate's absolute bounds for ``precision``: ``score_abs`` = ``score_rel`` × :func:`score_scale`,
    ``map_abs`` = ``map_rel`` × the eager map range over the golden images. Also returns the
    relative factors, the ``score_scale`` and ``rule`` (:data:`GATE_RULE`)."""
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {sorted(TOLERANCES)}, got {precision!r}")
    rel = TOLERANCES[precision]
    em = np.asarray(eager_maps, np.float64)
    map_range = float(em.max() - em.min()) if em.size else 0.0
    scale = score_scale(precision, eager_scores, threshold)
    return {"score_abs": rel["score_rel"] * scale, "map_abs": rel["map_rel"] * max(map_range, 1e-12), **rel,
            "score_scale": scale, "rule": GATE_RULE}


def compare_outputs(
    eager_scores: np.ndarray,
    eager_maps: np.ndarray,
    exported_scores: np.ndarray,
    exported_maps: np.ndarray,
    *,
    threshold: float | None,
    precision: str,
) -> ParityReport:
    """Compare outputs on the same golden batch and decide pass/fail (see module docstring)."""
    es, xs = np.asarray(eager_scores, np.float64), np.asarray(exported_scores, np.float64)
    em, xm = np.asarray(eager_maps, np.float64), np.asarray(exported_maps, np.float64)
    if es.shape != xs.shape or em.shape != xm.shape:
        raise ValueError(f"output shapes differ: eager {es.shape}/{em.shape}, exported {xs.shape}/{xm.shape}")
    tol = gate_tolerances(precision, es, em, threshold)
    map_range = float(em.max() - em.min()) if em.size else 0.0
    d_score = np.abs(es - xs)
    d_map = np.abs(em - xm).reshape(len(em), -1).max(axis=1) if em.size else np.zeros(len(es))
    finite = bool(np.all(np.isfinite(xs)) and np.all(np.isfinite(xm)))
    if threshold is None:
        el = xl = [None] * len(es)
        boundary: tuple = ()
    else:
        el = [int(v >= threshold) for v in es]
        xl = [int(v >= threshold) if np.isfinite(v) else None for v in xs]
        boundary = tuple(int(i) for i in np.flatnonzero(np.abs(es - threshold) <= tol["score_abs"]))
    labels_identical = all(el[i] == xl[i] for i in range(len(es)) if i not in boundary)
    per_image = [
        {"index": i, "eager_score": float(es[i]), "exported_score": float(xs[i]), "abs_score": float(d_score[i]),
         "eager_label": el[i], "exported_label": xl[i], "abs_map": float(d_map[i]), "boundary": i in boundary}
        for i in range(len(es))
    ]
    max_abs_score = float(d_score.max()) if len(es) else 0.0
    max_abs_map = float(d_map.max()) if len(es) else 0.0
    passed = finite and labels_identical and max_abs_score <= tol["score_abs"] and max_abs_map <= tol["map_abs"]
    return ParityReport(
        precision=precision,
        n_images=int(len(es)),
        max_abs_score=max_abs_score,
        max_rel_score=float((d_score / np.maximum(np.abs(es), 1e-12)).max()) if len(es) else 0.0,
        max_abs_map=max_abs_map,
        map_range=map_range,
        labels_identical=labels_identical,
        tolerance=tol,
        passed=passed,
        per_image=per_image,
        boundary=boundary,
    )
