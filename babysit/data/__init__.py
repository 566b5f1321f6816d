"""Data: sources (named sets, image folders, .npz), splits and preprocessing."""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.data.augment import Augment, list_augmentations, make_augment, parse_pipeline
    from babysit.data.idx import read_idx, write_idx
    from babysit.data.locate import cache_dir, find_dataset, get_dataset
    from babysit.data.preprocess import Preprocessor
    from babysit.data.sources import FASHION_MNIST_CLASSES, Dataset, ImageSet, dataset_info, list_datasets, load_dataset
    from babysit.data.split import Splits, split_dataset, stratified_indices

__all__ = ["Augment", "FASHION_MNIST_CLASSES", "Dataset", "list_augmentations", "make_augment", "parse_pipeline",
           "ImageSet", "Preprocessor", "Splits", "cache_dir", "dataset_info",
           "find_dataset", "get_dataset", "list_datasets", "load_dataset", "read_idx", "split_dataset",
           "stratified_indices", "write_idx"]

__getattr__, __dir__ = attach(__name__)
