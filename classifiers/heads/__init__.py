"""Classifier heads on top of backbone embeddings."""
from .imagenet import ImageNetHead, Prediction

__all__ = ["ImageNetHead", "Prediction"]
