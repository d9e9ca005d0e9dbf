"""Builds fastmi and its extension fastmi._C: the CPU kernels always, the CUDA kernels when torch
has CUDA and nvcc is present. Install with ``pip install --no-build-isolation [-e] .``.

Set FASTMI_NO_EXT_BUILD=1 to install the pure-Python package only (the extension is then JIT-built
on first use, or the reference backend is used).
"""
import importlib.util
import os
from pathlib import Path

from setuptools import setup

here = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("fastmi_build", here / "fastmi" / "_build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def rel(paths):
    return [os.path.relpath(p, here) for p in paths]


ext_modules, cmdclass = [], {}
if os.environ.get("FASTMI_NO_EXT_BUILD", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    with_cuda, why = build.want_cuda()
    print(f"fastmi: CUDA kernels {'on' if with_cuda else 'off'} ({why})")
    if with_cuda:
        ext = CUDAExtension(
            "fastmi._C",
            rel(build.cpu_sources() + build.cuda_sources()),
            extra_compile_args={"cxx": build.cxx_flags(), "nvcc": build.nvcc_flags()},
            extra_link_args=build.link_flags(),
        )
    else:
        ext = CppExtension("fastmi._C", rel(build.cpu_sources()), extra_compile_args={"cxx": build.cxx_flags()},
                           extra_link_args=build.link_flags())
    ext_modules = [ext]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}

setup(
    packages=["fastmi", "fastmi._core", "fastmi.critic_lse", "fastmi.separable", "fastmi.softmax_stats", "fastmi.mmd_imq",
              "fastmi.fd_jacobian", "fastmi.data", "fastmi.experiments", "fastmi.models", "fastmi.kernels"],
    package_dir={"fastmi.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
