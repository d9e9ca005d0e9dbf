"""Datasets used by fastmi's experiments."""
from .synthetic import correlated_gaussian, rho_for_mi

__all__ = ["correlated_gaussian", "rho_for_mi"]
