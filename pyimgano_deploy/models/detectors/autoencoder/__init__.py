"""The small convolutional autoencoder: ``spec`` (torch-free) and ``model`` (torch)."""
