"""Names of the per-image input normalisations before a backbone (torch-free, so detector
parameters can validate against them).

* ``standardize``: each image's pixel values (all channels, in [0, 1]) moved to mean
  ``STANDARD_MEAN`` and standard deviation ``STANDARD_SPREAD``, close to a well-exposed natural
  image's, so dark and bright parts reach the backbone alike. It runs in the graph.
* ``clahe``: contrast-limited adaptive histogram equalisation of each image's lightness
  (:mod:`pyimgano_deploy.inputs.contrast`), for light that varies across a part. It runs on the
  host, as the last part of the preprocessing step, so the bundle's preprocessing carries it.
"""

ILLUMINATION = ("none", "standardize", "clahe")
STANDARD_MEAN, STANDARD_SPREAD = 0.45, 0.225


def host_contrast(illumination: str) -> str:
    """The :class:`~pyimgano_deploy.inputs.preprocess.Preprocess` ``contrast`` an ``illumination`` needs."""
    return "clahe" if illumination == "clahe" else "none"
