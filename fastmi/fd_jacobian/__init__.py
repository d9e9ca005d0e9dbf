"""Neural Bayes' finite-difference smoothness regularizer R_c: ``ops``, ``api`` / ``nn``."""
