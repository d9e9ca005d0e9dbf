"""MMD^2 with the inverse-multiquadric kernel (Variational InfoMax): ``ops``, ``api`` / ``nn``."""
