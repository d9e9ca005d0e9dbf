"""Reference models of fastmi's experiments: critics and image backbones."""
from .critics import ConcatCritic, PairwiseConcatCritic, keras_normal_init_

__all__ = ["ConcatCritic", "PairwiseConcatCritic", "keras_normal_init_"]
from .neural_bayes_dms import DMSCNN, DMSMLP, FilterMLP, orthogonal_init_

__all__ += ["DMSMLP", "DMSCNN", "FilterMLP", "orthogonal_init_"]
