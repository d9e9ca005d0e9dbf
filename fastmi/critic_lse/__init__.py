"""Critic bounds on a score matrix: ``bounds`` (the table and formulas), ``stats`` (row statistics),
``ops`` (the fused op on every backend), ``api`` / ``nn`` (the generated functions and modules)."""
