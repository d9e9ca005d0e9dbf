"""An independent (numpy) implementation of the random stream the fused fd_jacobian kernels draw their
span coefficients from (csrc/fd_jacobian.h, kernels/fd_jacobian.py): the tests feed its matrix to the
oracle's span_perturb and compare with the kernels' x_tilde."""
import torch

def span_coefficients(seed: int, B: int, noise: str) -> torch.Tensor:
    """The B x B coefficients c_ij that the fused kernels generate from ``seed`` (csrc/fd_jacobian.h),
    as a dense float64 matrix: an independent (numpy) implementation of the stream, for tests.

    Philox4x32-10 (Triton's tl.randint4x): counter (lo32(offset), hi32(offset), 0, 0), key (lo32(seed),
    hi32(seed)). Bernoulli: bit j%32 of word (j%128)//32 at offset i*ceil(B/128) + j//128. Gaussian:
    output j%4 of Box-Muller (float32) at offset i*ceil(B/4) + j//4, as tl.randn4x.
    """
    import numpy as np

    M32 = np.uint64(0xFFFFFFFF)
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    i = np.arange(B, dtype=np.uint64)[:, None]
    j = np.arange(B, dtype=np.uint64)[None, :]
    per = (B + 127) // 128 if noise == "bernoulli" else (B + 3) // 4
    offset = i * np.uint64(per) + (j // np.uint64(128 if noise == "bernoulli" else 4))
    c0, c1 = offset & M32, offset >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(s & 0xFFFFFFFF), np.uint64(s >> 32)
    with np.errstate(over="ignore"):
        for _ in range(10):
            p0 = np.uint64(0xD2511F53) * c0
            p2 = np.uint64(0xCD9E8D57) * c2
            c0, c1, c2, c3 = ((p2 >> np.uint64(32)) ^ c1 ^ k0, p2 & M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & M32)
            k0 = (k0 + np.uint64(0x9E3779B9)) & M32
            k1 = (k1 + np.uint64(0xBB67AE85)) & M32
    words = [c0, c1, c2, c3]
    if noise == "bernoulli":
        sel = (j % np.uint64(128)) // np.uint64(32)
        word = np.choose(sel.astype(np.int64) + np.zeros((B, 1), dtype=np.int64), words)
        out = (word >> (j % np.uint64(32))) & np.uint64(1)
        return torch.from_numpy(out.astype(np.float64))

    def uniform(w):
        v = w.astype(np.uint32).view(np.int32)
        v = np.where(v < 0, ~v, v)
        return v.astype(np.float32) * np.float32(4.6566127342e-10)

    u = [uniform(w) for w in words]
    normals = []
    for a, b in ((u[0], u[1]), (u[2], u[3])):
        a = np.maximum(np.float32(1e-7), a)
        th = np.float32(6.283185307179586) * b
        r = np.sqrt(np.float32(-2.0) * np.log(a))
        normals += [r * np.cos(th), r * np.sin(th)]
    sel = (j % np.uint64(4)).astype(np.int64) + np.zeros((B, 1), dtype=np.int64)
    return torch.from_numpy(np.choose(sel, normals).astype(np.float64))


