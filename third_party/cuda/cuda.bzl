"""cuda_library(): compiles .cu files with the system nvcc into a cc_library.

rules_cuda cannot be downloaded here, so a genrule calls
/usr/local/cuda/bin/nvcc directly and archives the objects (position
independent) into a static library that a cc_library links. Use it only
behind select() on //third_party/cuda:enabled (see kernels/BUILD), so a build
without --config=cuda never runs nvcc.

Architectures: CUDA 13 dropped Volta (sm_70), so the fat binary carries
machine code for Turing (sm_75), Ampere (sm_80) and Hopper (sm_90) plus
compute_90 PTX, which the driver JIT-compiles for newer GPUs.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

# target_compatible_with value for targets that exist only with --config=cuda.
CUDA_ONLY = select({
    "//third_party/cuda:enabled": [],
    "//conditions:default": ["//third_party/cuda:incompatible"],
})

CUDA_ARCH_FLAGS = [
    "-gencode=arch=compute_75,code=sm_75",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]

def cuda_library(name, srcs, hdrs = [], deps = [], nvcc_flags = [], **kwargs):
    """A cc_library from .cu sources.

    Args:
      name: the cc_library's name.
      srcs: .cu files.
      hdrs: headers the .cu files include and that dependents may include.
      deps: cc_library dependencies (their headers must be in `hdrs` of this
        target or reachable from the workspace root, as nvcc runs with -I.).
      nvcc_flags: extra nvcc flags.
      **kwargs: passed to the cc_library (tags, visibility, testonly).
    """
    archive = "lib" + name + "_cu.a"
    native.genrule(
        name = name + "_nvcc",
        srcs = srcs + hdrs,
        outs = [archive],
        cmd = " ".join([
            NVCC,
            "--lib",
            "-O3",
            "-std=c++17",
            "-Xcompiler=-fPIC",
            "-I.",
            "-I$(GENDIR)",
        ] + CUDA_ARCH_FLAGS + nvcc_flags + [
            "-o $@",
        ] + ["$(location %s)" % s for s in srcs]),
        message = "nvcc " + name,
        tags = kwargs.get("tags", []),
        testonly = kwargs.get("testonly", False),
        target_compatible_with = CUDA_ONLY,
    )
    native.cc_library(
        name = name,
        srcs = [archive],
        hdrs = hdrs,
        deps = deps + ["//third_party/cuda:cudart"],
        target_compatible_with = CUDA_ONLY,
        **kwargs
    )
