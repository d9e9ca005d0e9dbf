"""Builds fastmi and its compiled kernels (``fastmi/_build.py`` says which and how): the op schemas
``fastmi._C`` (with the CUDA kernels when torch has CUDA and nvcc is present) and the CPU kernels
twice, ``fastmi._cpu_avx2`` and ``fastmi._cpu_portable``; the one the CPU can run is loaded.

Install with ``pip install --no-build-isolation [-e] .``: the kernels are compiled against the torch
already installed (an isolated build would fetch another torch and build against that one). Needs a
C++ compiler with OpenMP (g++ or clang with libomp) and ninja (``pip install ninja``) for a fast
parallel build; ``MAX_JOBS=N`` limits the parallel compiler processes.

Set FASTMI_NO_EXT_BUILD=1 to install the pure-Python package only (the kernels are then JIT-built
from the shipped ``fastmi/csrc`` on first use, or the reference backend is used).
"""
import ast
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

here = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("fastmi_build", here / "fastmi" / "_build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def base_version() -> str:
    """``__version__`` of fastmi/__init__.py (read, not imported: importing fastmi needs the build)."""
    tree = ast.parse((here / "fastmi" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return node.value.value
    raise RuntimeError("fastmi/__init__.py has no __version__")


def rel(paths):
    return [os.path.relpath(p, here) for p in paths]


class BuildPyWithSources(build_py):
    """Ships csrc/ inside the package (``fastmi/csrc``), so that an installed fastmi can JIT-build its
    kernels when the prebuilt ones do not load (another torch, or FASTMI_NO_EXT_BUILD=1)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "fastmi" / "csrc"
        for src in build.shipped_sources():
            dst = target / src.relative_to(build.csrc_dir())
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


ext_modules, cmdclass = [], {"build_py": BuildPyWithSources}
version = base_version()
if os.environ.get("FASTMI_NO_EXT_BUILD", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    with_cuda, why = build.want_cuda()
    print(f"fastmi: CUDA kernels {'on' if with_cuda else 'off'} ({why}); CPU kernels: "
          f"{', '.join(build.ISA_NAMES[v] for v in build.isa_variants())}", flush=True)
    if with_cuda:
        ext_modules.append(CUDAExtension(
            "fastmi._C", rel(build.core_sources() + build.cuda_sources()),
            extra_compile_args={"cxx": build.cxx_flags("portable"), "nvcc": build.nvcc_flags()},
            extra_link_args=build.link_flags()))
    else:
        ext_modules.append(CppExtension("fastmi._C", rel(build.core_sources()),
                                        extra_compile_args={"cxx": build.cxx_flags("portable")},
                                        extra_link_args=build.link_flags()))
    for isa in build.isa_variants():
        ext_modules.append(CppExtension(f"fastmi._cpu_{isa}", rel(build.cpu_sources()),
                                        extra_compile_args={"cxx": build.cxx_flags(isa)},
                                        extra_link_args=build.link_flags()))

    class BuildKernels(BuildExtension.with_options(use_ninja=True)):
        """torch's BuildExtension, with a build folder per module (the CPU variants compile the same
        files with other flags), a line per module with its time, and ``_build_info.json``."""

        def build_extension(self, ext):
            temp = self.build_temp
            self.build_temp = os.path.join(temp, ext.name)
            n = len(ext.sources)
            print(f"fastmi: compiling {ext.name} ({n} file{'s' * (n > 1)}) ...", flush=True)
            t0 = time.perf_counter()
            try:
                super().build_extension(ext)
            finally:
                self.build_temp = temp
            print(f"fastmi: {ext.name} built in {time.perf_counter() - t0:.0f} s", flush=True)

        def run(self):
            super().run()
            out = Path(self.get_ext_fullpath("fastmi._C")).parent / build.BUILD_INFO
            out.write_text(json.dumps(build.build_info(with_cuda), indent=2) + "\n")

    cmdclass["build_ext"] = BuildKernels
    version += "+" + build.local_version_label()

setup(
    version=version,
    packages=find_packages(include=["fastmi", "fastmi.*"]) + ["fastmi.kernels"],
    package_dir={"fastmi.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
