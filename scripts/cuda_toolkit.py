"""The CUDA toolkit that the environment's torch wheel was built with.

    python scripts/cuda_toolkit.py            # prints its root, or nothing
    python scripts/cuda_toolkit.py --prepare  # scripts/setup: make it usable

Note [CUDA toolkit from the wheels]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
PyPI's torch for Linux is a CUDA build, and its TorchConfig.cmake configures
only with a CUDA compiler (enable_language(CUDA)) and a toolkit of the same
CUDA version. A machine's own toolkit may be missing (Debian has none of
CUDA 12 or later) or of another version, so the environment carries one:
NVIDIA's wheels, `cuda-toolkit[nvcc,crt,nvvm,cccl]` at the version torch
requires, unpacked together under site-packages/nvidia/cu<major>/ as bin/,
include/ and lib/. Those wheels are made for loading, not linking: the
libraries are there only as libX.so.N, and nvcc links its programs from
lib64/, which they lack. --prepare adds the libX.so links a -dev package
would and lib64 as a link to lib, so that nvcc, CMake's FindCUDA and
FindCUDAToolkit find them (a machine's own toolkit in the linker's default
path can hide that neither is there: check on one without).
Nothing here runs CUDA code; loopserve compiles no .cu file, and a machine
without a GPU or driver runs the same binaries on the CPU.
"""

import glob
import os
import re
import sys

import torch


def toolkit_root():
    """The environment's toolkit for torch's CUDA, or None (a CPU torch)."""
    if not torch.version.cuda:
        return None
    major = torch.version.cuda.split(".")[0]
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return os.path.join(site, "nvidia", f"cu{major}")


def prepare(root):
    if not os.path.exists(os.path.join(root, "bin", "nvcc")):
        sys.exit(f"cuda_toolkit.py: no nvcc under {root}: the lock must hold "
                 f"cuda-toolkit[nvcc] for torch's CUDA {torch.version.cuda}")
    lib64 = os.path.join(root, "lib64")
    if not os.path.lexists(lib64):
        os.symlink("lib", lib64)
    for library in glob.glob(os.path.join(root, "lib", "lib*.so.*")):
        match = re.fullmatch(r"(lib.+\.so)\.\d+", os.path.basename(library))
        if not match:
            continue  # libX.so.N.M: the libX.so.N beside it is linked
        link = os.path.join(root, "lib", match.group(1))
        if not os.path.lexists(link):
            os.symlink(os.path.basename(library), link)


def main():
    root = toolkit_root()
    if root is None:
        return
    if sys.argv[1:] == ["--prepare"]:
        prepare(root)
    elif not os.path.exists(os.path.join(root, "lib", "libcudart.so")):
        sys.exit(f"cuda_toolkit.py: {root} is not prepared: run scripts/setup")
    else:
        print(root, end="")


if __name__ == "__main__":
    main()
