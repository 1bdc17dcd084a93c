"""Classifier heads on top of backbone embeddings."""
from .artifact import Head
from .imagenet import ImageNetHead, Prediction
from .kinds import HEAD_KINDS, make_head
from .train import TrainHeadConfig, train_head

__all__ = ["HEAD_KINDS", "Head", "ImageNetHead", "Prediction", "TrainHeadConfig", "make_head",
           "train_head"]
