"""Image inputs: declared formats, file reading, the shared preprocessing step (numpy + cv2).

Torch-free by rule (ARCHITECTURE.md §2).
"""

from pyimgano_deploy.inputs.collect import ImageInput, as_image_list, describe_input, load_canonical
from pyimgano_deploy.inputs.formats import (
    FORMAT_NDIM,
    ImageFormat,
    ImageFormatError,
    normalize_numpy_image,
    parse_image_format,
)
from pyimgano_deploy.inputs.preprocess import INTERPOLATIONS, Preprocess
from pyimgano_deploy.inputs.reader import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    decode_image,
    read_image,
    read_mask,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMAT_NDIM",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "ImageFormat",
    "ImageFormatError",
    "ImageInput",
    "ImageReadError",
    "Preprocess",
    "as_image_list",
    "decode_image",
    "describe_input",
    "load_canonical",
    "normalize_numpy_image",
    "parse_image_format",
    "read_image",
    "read_mask",
]
