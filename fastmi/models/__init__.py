"""Reference models of fastmi's experiments: critics, image backbones, stochastic classifiers."""
from .critics import ConcatCritic, PairwiseConcatCritic, keras_normal_init_
from .vim import ConvEncoder, MeanLogits, MLPEncoder, StochasticClassifier

__all__ = ["ConcatCritic", "PairwiseConcatCritic", "keras_normal_init_", "MLPEncoder", "ConvEncoder",
           "StochasticClassifier", "MeanLogits"]
