"""Data sets: MVTec-layout and plain-folder loaders, synthetic demo data (numpy + cv2, no torch)."""

from pyimgano_deploy.datasets.folder import ANOMALOUS_DEFECT_TYPE, load_folder
from pyimgano_deploy.datasets.mvtec import list_mvtec_categories, load_labelled_dir, load_mvtec
from pyimgano_deploy.datasets.synthetic import (
    DEFECT_KINDS,
    SyntheticImage,
    draw_defect,
    generate_synthetic_dataset,
    render_sample,
    render_surface,
)
from pyimgano_deploy.datasets.types import (
    IMAGE_EXTENSIONS,
    NORMAL_DEFECT_TYPE,
    AnomalyDataset,
    DatasetError,
    Sample,
)

__all__ = [
    "ANOMALOUS_DEFECT_TYPE",
    "DEFECT_KINDS",
    "IMAGE_EXTENSIONS",
    "NORMAL_DEFECT_TYPE",
    "AnomalyDataset",
    "DatasetError",
    "Sample",
    "SyntheticImage",
    "draw_defect",
    "generate_synthetic_dataset",
    "list_mvtec_categories",
    "load_folder",
    "load_labelled_dir",
    "load_mvtec",
    "render_sample",
    "render_surface",
]
