"""Classifier heads on top of backbone embeddings.

``KIND_NAMES`` lists the head kinds without importing scikit-learn (the command line's choices);
``kinds.HEAD_KINDS`` maps the same names to their estimators and checks that they agree.
"""
from embedsvc.lazy import lazy_exports

KIND_NAMES = ("logreg", "linear-svm", "svm", "knn", "centroid")

__all__ = ["HEAD_KINDS", "KIND_NAMES", "Head", "ImageNetHead", "Prediction", "TrainHeadConfig",
           "make_head", "train_head"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Head": "artifact", "ImageNetHead": "imagenet", "Prediction": "imagenet",
    "HEAD_KINDS": "kinds", "make_head": "kinds", "TrainHeadConfig": "train", "train_head": "train"})
