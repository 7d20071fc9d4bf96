"""pstrain_proto_library(): one line to declare a C++ protobuf library.

rules_proto cannot be downloaded here, so a genrule runs the system protoc
(Debian's protobuf-compiler, matching libprotobuf-dev) and a cc_library
compiles the generated code. Include the result as "<package>/<name>.pb.h".
"""

def pstrain_proto_library(name, srcs, deps = [], **kwargs):
    """A cc_library `name` compiled from the .proto files in `srcs`.

    Args:
      name: the cc_library's name.
      srcs: .proto files in this package.
      deps: other pstrain_proto_library targets whose .proto files these import.
      **kwargs: passed to the cc_library (visibility, testonly, ...).
    """
    pkg = native.package_name()
    prefix = pkg + "/" if pkg else ""
    hdrs = [s[:-len(".proto")] + ".pb.h" for s in srcs]
    ccs = [s[:-len(".proto")] + ".pb.cc" for s in srcs]
    native.filegroup(
        name = name + "_protos",
        srcs = srcs,
        visibility = kwargs.get("visibility", None),
    )
    native.genrule(
        name = name + "_protoc",
        srcs = srcs + [d + "_protos" for d in deps],
        outs = hdrs + ccs,
        cmd = "/usr/bin/protoc -I. --cpp_out=$(GENDIR) " +
              " ".join(["%s%s" % (prefix, s) for s in srcs]),
        message = "protoc " + prefix + name,
    )
    native.cc_library(
        name = name,
        srcs = ccs,
        hdrs = hdrs,
        deps = deps + ["//third_party:protobuf"],
        **kwargs
    )
