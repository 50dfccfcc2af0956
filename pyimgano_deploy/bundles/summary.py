"""What a verified bundle is, in one page: the facts an integrator checks before deploying it.

:func:`describe_bundle` reads only the manifest (already verified by ``read_bundle``: schema,
files, checksums) and never loads an engine, so it runs on any machine with numpy. Fields that
an older schema does not have are ``None``, never guessed.
"""

from __future__ import annotations

from typing import Any

from pyimgano_deploy.bundles import io_contract as io
from pyimgano_deploy.bundles.signing import SIGNATURE_NAME
from pyimgano_deploy.inputs.source_info import aspect_text

__all__ = ["describe_bundle", "summary_lines"]

#: detector parameters worth a line of their own (the rest are in ``bundle.json``)
_KEY_PARAMETERS = ("backbone", "pretrained", "image_size", "stages", "coreset_ratio", "n_channels", "neighbourhood", "k",
                   "image_score", "illumination", "blur_sigma")


_COLOUR_TEXT = {"grey": "grey images", "colour": "colour images", "mixed": "grey and colour images"}


def _threshold(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    return {k: record.get(k) for k in ("value", "method", "source_split", "n_images")}


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    image, pixel = metrics.get("image") or {}, metrics.get("pixel") or {}
    by_type = image.get("by_defect_type") or {}
    return {
        "image_auroc": image.get("auroc"),
        "pixel_auroc": pixel.get("auroc"),
        "aupro": pixel.get("aupro"),
        "recall_at_threshold": image.get("recall"),
        "precision_at_threshold": image.get("precision"),
        "test_images": image.get("n_images"),
        "missed_by_defect_type": {name: {"missed": len(t.get("missed") or []), "of": t.get("n")}
                                  for name, t in by_type.items() if isinstance(t, dict)},
    }


def _recalibrations(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ``recalibrations`` entry with the image threshold it replaced and the one it set
    (the next entry's previous one, or the bundle's for the last)."""
    entries = [e for e in m.get("recalibrations") or [] if isinstance(e, dict)]
    befores = [((e.get("previous_thresholds") or {}).get("image") or {}).get("value") for e in entries]
    current = ((m.get("thresholds") or {}).get("image") or {}).get("value")
    return [{"created_at": e.get("created_at"), "from_digest": e.get("from_digest"), "image_before": before,
             "image_after": after, "n_scored": (e.get("images") or {}).get("n_scored"),
             "n_validation": (e.get("images") or {}).get("n_validation") or 0,
             "images_sha256": (e.get("images") or {}).get("sha256")}
            for e, before, after in zip(entries, befores, [*befores[1:], current])]


def describe_bundle(bundle: Any) -> dict[str, Any]:
    """A JSON-able summary of a :class:`~pyimgano_deploy.bundles.reader.Bundle`: identity, model,
    input contract, engines, thresholds, training metrics, parity and the export machine."""
    m = bundle.manifest
    model, inp = m.get("model") or {}, m.get("input") or {}
    params = model.get("parameters") or {}
    fitted = model.get("fitted") or {}
    sizes = {f["path"]: f.get("bytes") for f in m.get("files") or []}
    env = m.get("environment") or {}
    return {
        "bundle": str(bundle.root),
        "digest": bundle.digest,
        "schema_version": m.get("schema_version"),
        "created_at": m.get("created_at"),
        "toolkit_version": (m.get("toolkit") or {}).get("version"),
        "signed": (bundle.root / SIGNATURE_NAME).is_file(),
        "model": {"name": model.get("name"), "family": model.get("family"),
                  "parameters": {k: params[k] for k in _KEY_PARAMETERS if k in params},
                  "fitted_images": fitted.get("n_images"), "bank_size": fitted.get("bank_size")},
        "input": {"height": inp.get("height"), "width": inp.get("width"), "preprocess": inp.get("preprocess"),
                  "trained_colour": inp.get(io.TRAINED_COLOUR_KEY), "trained_aspect": inp.get(io.TRAINED_ASPECT_KEY),
                  "u16_max": inp.get(io.U16_MAX_KEY)},
        "engines": [{"file": e.get("file"), "format": e.get("format"), "precision": e.get("precision"), "bytes": sizes.get(e.get("file")),
                     "batch": e.get("batch")} for e in m.get("engines") or []],
        "thresholds": {"image": _threshold((m.get("thresholds") or {}).get("image")),
                       "pixel": _threshold((m.get("thresholds") or {}).get("pixel"))},
        "recalibrations": _recalibrations(m),
        "defects_defaults": m.get("defects") is not None,
        "tiling": m.get("tiling"),
        "training_metrics": _metrics((m.get("source_run") or {}).get("metrics") or {}),
        "parity": {p: {k: r.get(k) for k in ("n_images", "max_abs_score", "max_abs_map", "labels_identical")}
                   for p, r in (m.get("parity") or {}).items()},
        "golden_images": (m.get("golden") or {}).get("n_images"),
        "exported_on": {"cpu": env.get("cpu_model"), "python": env.get("python"), "packages": env.get("packages")},
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _fraction(value: Any, decimals: int = 4) -> str:
    """A metric in [0, 1] with fixed decimals (1.0000, not 1), or ``-`` when absent."""
    return "-" if value is None else f"{float(value):.{decimals}f}"


def _scored_text(r: dict[str, Any]) -> str:
    if not isinstance(r["n_scored"], int):
        return "- images"
    normal, labelled = r["n_scored"] - r["n_validation"], r["n_validation"]
    return f"{normal} normal images" + (f" and {labelled} labelled ones" if labelled else "")


def summary_lines(d: dict[str, Any]) -> list[str]:
    """:func:`describe_bundle`'s dict as the lines ``inspect`` prints (``label  text``)."""
    model, inp, metrics = d["model"], d["input"], d["training_metrics"]
    params = ", ".join(f"{k}={v}" for k, v in model["parameters"].items())
    pre = inp["preprocess"] or {}
    rows = [
        ("bundle", d["bundle"]),
        ("digest", f"{d['digest']}  ({'signed' if d['signed'] else 'not signed'})"),
        ("created", f"{_fmt(d['created_at'])} by pyimgano-deploy {_fmt(d['toolkit_version'])}, schema {d['schema_version']}"),
        ("model", f"{model['name']} ({model['family']}); {params}"),
        ("fitted on", f"{_fmt(model['fitted_images'])} images" + (f", memory bank {model['bank_size']} rows" if model["bank_size"] else "")),
        ("input", f"{inp['height']} x {inp['width']} RGB uint8, resize {pre.get('size')} ({pre.get('interpolation')})"
         + (f", centre crop {pre['center_crop']}" if pre.get("center_crop") else "")
         + (f", contrast {pre['contrast']}" if pre.get("contrast") else "")),
        ("trained on", _COLOUR_TEXT.get(inp["trained_colour"], "not recorded (a bundle from before schema 1.5)")
         + (f", 16-bit full scale {inp['u16_max']}" if inp["u16_max"] else "")
         + ("" if not inp["trained_aspect"] else f", aspect (width / height) {aspect_text(inp['trained_aspect'])}")),
    ]
    for e in d["engines"]:
        batch = e["batch"] or {}
        size = f"{e['bytes'] / 1e6:.1f} MB" if e["bytes"] else "size unknown"
        rows.append(("engine", f"{e['file']} ({e['format']}, {e['precision']}, {size}, batch {batch.get('min')}-{batch.get('max')})"))
    for key in ("image", "pixel"):
        t = d["thresholds"][key]
        rows.append((f"{key} threshold", "none" if t is None else
                     f"{_fmt(t['value'], 6)} ({t['method']}, {t['n_images']} {t['source_split']} images)"))
    recal = d["recalibrations"]
    for r in recal:
        rows.append(("recalibrated", f"{_fmt(r['created_at'])} from {_fmt(r['from_digest'])}: image threshold "
                     f"{_fmt(r['image_before'], 6)} → {_fmt(r['image_after'], 6)}, on {_scored_text(r)} "
                     f"(their digests hash to {_fmt(r['images_sha256'])[:16]}…)"))
    at = f"the run's image threshold {_fmt(recal[0]['image_before'], 6)}" if recal else "the image threshold"
    missed = ", ".join(f"{k} {v['missed']} of {v['of']}" for k, v in metrics["missed_by_defect_type"].items())
    rows.append(("test split", f"{_fmt(metrics['test_images'])} images: image AUROC {_fraction(metrics['image_auroc'])}, pixel AUROC "
                 f"{_fraction(metrics['pixel_auroc'])}, AUPRO {_fraction(metrics['aupro'])}; at {at} recall "
                 f"{_fraction(metrics['recall_at_threshold'], 3)}, precision {_fraction(metrics['precision_at_threshold'], 3)}"
                 + (f"; missed: {missed}" if missed else "")))
    for precision, p in d["parity"].items():
        rows.append(("parity", f"{precision} on {p['n_images']} golden images: max |Δscore| {_fmt(p['max_abs_score'], 3)}, "
                     f"max |Δmap| {_fmt(p['max_abs_map'], 3)}, labels identical: {p['labels_identical']}"))
    rows.append(("tiling", f"{'none' if not d['tiling'] else d['tiling']}; defects defaults: {'yes' if d['defects_defaults'] else 'none'}"))
    env = d["exported_on"]
    packages = ", ".join(f"{k} {v}" for k, v in (env["packages"] or {}).items() if v)
    rows.append(("exported on", f"{_fmt(env['cpu'])}, Python {_fmt(env['python'])}; {packages}"))
    width = max(len(label) for label, _ in rows) + 1
    return [f"{label + ':':<{width}}  {text}" for label, text in rows]
