"""Flax models. Importing this package never imports TensorFlow."""

from radjax.models.classifier import Classifier
from radjax.models.inception_v3 import BLOCKS, NUM_FEATURES, STEM, InceptionV3, lowering

__all__ = ["BLOCKS", "Classifier", "InceptionV3", "NUM_FEATURES", "STEM", "lowering"]
