"""Reference models of fastmi's experiments: critics, image backbones, stochastic classifiers."""
from .hybrid_autoencoder import HybridAutoencoder
from .latent_ddim import LatentDiffusion
from .moco import MoCo
from .critics import ConcatCritic, PairwiseConcatCritic, keras_normal_init_
from .neural_bayes_dms import DMSCNN, DMSMLP, FilterMLP, orthogonal_init_
from .neural_bayes_mim import MIM_CHANNELS, MIMEncoder, encode, global_pool, mim_channels
from .vim import ConvEncoder, MeanLogits, MLPEncoder, StochasticClassifier

__all__ = ["ConcatCritic", "PairwiseConcatCritic", "keras_normal_init_", "DMSMLP", "DMSCNN", "FilterMLP",
           "orthogonal_init_", "MIMEncoder", "MIM_CHANNELS", "mim_channels", "encode", "global_pool", "MLPEncoder",
           "ConvEncoder", "StochasticClassifier", "MeanLogits", "HybridAutoencoder", "MoCo",
           "LatentDiffusion"]
