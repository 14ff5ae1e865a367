"""Datasets on disk and the latent cache built from them."""

from latentdistill.data.image_folder import (
    ImageFolder,
    load_image,
    load_images,
    split_train_validation,
)
from latentdistill.data.latent_cache import LatentCache, encode_dataset

__all__ = ["ImageFolder", "LatentCache", "encode_dataset", "load_image", "load_images", "split_train_validation"]
