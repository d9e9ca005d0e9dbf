"""The critic bounds of a separable critic S = x y^T / temperature, never building S: ``critic``
(scales and layout), ``ops`` (the fused op), ``api`` / ``nn``."""
