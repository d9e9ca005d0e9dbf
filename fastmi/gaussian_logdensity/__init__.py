"""Upper bounds on MI for a Gaussian variational conditional q(y|x) = N(mu(x), diag exp(logvar(x))),
without the n x n log-density matrix: CLUB (a closed form over O(n d) sums) and L1Out (the
separable family's fused log-sum-exp over augmented features)."""
