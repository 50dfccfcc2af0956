"""Names of the per-image input normalisations before a backbone (torch-free, so detector
parameters can validate against them). ``standardize``: each image's pixel values (all
channels, in [0, 1]) moved to mean ``STANDARD_MEAN`` and standard deviation
``STANDARD_SPREAD``, close to a well-exposed natural image's, so dark and bright parts reach
the backbone alike."""

ILLUMINATION = ("none", "standardize")
STANDARD_MEAN, STANDARD_SPREAD = 0.45, 0.225
