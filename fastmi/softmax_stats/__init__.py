"""Neural Bayes' softmax statistics (MIM, DMS): ``ops`` (the fused op), ``api`` / ``nn``."""
