"""A PEP 517 build backend for the loopserve package, in the standard
library alone, so that `pip install ./client/python` needs no download.

It writes a wheel of loopserve/ plus the gRPC modules protoc generates from
the repository's proto/ ($LOOPSERVE_PROTO_DIR overrides where that is), with
grpc_python_plugin (found on PATH, or $GRPC_PYTHON_PLUGIN).
"""

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile

NAME = "loopserve"
VERSION = "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["loopserve/v1/loopserve.proto"]
DEPENDENCIES = ["grpcio", "protobuf", "numpy"]


def _generate(out):
    proto_dir = os.environ.get(
        "LOOPSERVE_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))
    plugin = (os.environ.get("GRPC_PYTHON_PLUGIN")
              or shutil.which("grpc_python_plugin"))
    protoc = shutil.which("protoc")
    for proto in PROTOS:
        if not os.path.exists(os.path.join(proto_dir, proto)):
            raise RuntimeError(
                f"loopserve: {proto} is not under {proto_dir}: build from "
                "the loopserve repository, or set LOOPSERVE_PROTO_DIR")
    if protoc is None or plugin is None:
        raise RuntimeError(
            "loopserve: the build needs protoc and grpc_python_plugin "
            "(apt-get install protobuf-compiler protobuf-compiler-grpc)")
    subprocess.run(
        [protoc, f"--proto_path={proto_dir}", f"--python_out={out}",
         f"--grpc_out={out}", f"--plugin=protoc-gen-grpc={plugin}", *PROTOS],
        check=True)
    for folder in ("loopserve", "loopserve/v1"):
        open(os.path.join(out, folder, "__init__.py"), "a").close()


def _files():
    """(path in the wheel, bytes) of every file the package holds."""
    files = []
    package = os.path.join(HERE, "loopserve")
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            with open(os.path.join(package, name), "rb") as f:
                files.append((f"loopserve/{name}", f.read()))
    with tempfile.TemporaryDirectory() as out:
        os.makedirs(os.path.join(out, "loopserve"))
        _generate(out)
        for name in sorted(os.listdir(os.path.join(out, "loopserve", "v1"))):
            with open(os.path.join(out, "loopserve", "v1", name), "rb") as f:
                files.append((f"loopserve/v1/{name}", f.read()))
    return files


def _metadata():
    lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {VERSION}",
             "Summary: Python client of loopserve",
             "Requires-Python: >=3.9"]
    lines += [f"Requires-Dist: {d}" for d in DEPENDENCIES]
    return ("\n".join(lines) + "\n").encode()


def _dist_info():
    return f"{NAME}-{VERSION}.dist-info"


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return f"{path},sha256={digest.rstrip(b'=').decode()},{len(data)}"


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    info = _dist_info()
    files = _files() + [
        (f"{info}/METADATA", _metadata()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: loopserve_build\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{info}/top_level.txt", b"loopserve\n"),
    ]
    record = [_record_line(path, data) for path, data in files]
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w",
                         zipfile.ZIP_DEFLATED) as archive:
        for path, data in files:
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory,
                                     config_settings=None):
    info = os.path.join(metadata_directory, _dist_info())
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "wb") as f:
        f.write(_metadata())
    return _dist_info()
