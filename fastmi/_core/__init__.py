"""What every family shares, each thing once: input validation (``validate``), the backend
registry (``registry``), the fused-op helper (``fused_op``), the result types (``result``) and
the dtype rules (``dtypes``)."""
