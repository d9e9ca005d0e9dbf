"""Reference models of fastmi's experiments: critics and image backbones."""
from .critics import ConcatCritic, PairwiseConcatCritic, keras_normal_init_
from .neural_bayes_dms import DMSCNN, DMSMLP, FilterMLP, orthogonal_init_
from .neural_bayes_mim import MIM_CHANNELS, MIMEncoder, encode, global_pool, mim_channels

__all__ = ["ConcatCritic", "PairwiseConcatCritic", "keras_normal_init_", "DMSMLP", "DMSCNN", "FilterMLP",
           "orthogonal_init_", "MIMEncoder", "MIM_CHANNELS", "mim_channels", "encode", "global_pool"]
