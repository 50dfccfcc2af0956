"""docs/DETECTORS.md lists exactly the registered detectors (generated from the registry)."""

from pathlib import Path

from pyimgano_deploy.models.catalog import catalog_markdown, with_catalog

DOC = Path(__file__).resolve().parents[1] / "docs" / "DETECTORS.md"


def test_detectors_doc_catalog_is_current():
    text = DOC.read_text(encoding="utf-8")
    assert with_catalog(text) == text, "run: python -m pyimgano_deploy.models.catalog --write docs/DETECTORS.md"


def test_catalog_has_one_row_per_registered_model():
    from pyimgano_deploy.models import list_models

    rows = [line for line in catalog_markdown().splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list_models()
