"""A PEP 517 build backend for the loopserve package, in the standard
library alone, so that `pip install ./client/python` needs no build
download, no protoc and nothing outside this folder.

It writes a wheel of every module under loopserve/, the gRPC modules
(loopserve/v1/, generated from the repository's proto/ and checked in)
among them.
"""

import base64
import hashlib
import os
import zipfile

NAME = "loopserve"
VERSION = "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))
# The generated modules check these at import (protobuf's runtime version
# check, GRPC_GENERATED_VERSION): the versions of grpcio-tools' protoc that
# generated them, and the major version after.
DEPENDENCIES = ["grpcio>=1.81.1", "protobuf>=6.33.5,<7", "numpy"]
EXTRAS = {"pil": ["pillow"],
          # loopserve-export (loopserve.export)
          "export": ["torch", "diffusers", "transformers", "safetensors"]}
# Console scripts: name -> module:function.
SCRIPTS = {"loopserve-export": "loopserve.export:main"}


def _files():
    """(path in the wheel, bytes) of every module the package holds."""
    files = []
    for folder, dirs, names in os.walk(os.path.join(HERE, NAME)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    files.append((os.path.relpath(path, HERE).replace(
                        os.sep, "/"), f.read()))
    return files


def _metadata():
    lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {VERSION}",
             "Summary: Python client of loopserve",
             "Requires-Python: >=3.9"]
    lines += [f"Requires-Dist: {d}" for d in DEPENDENCIES]
    for extra, requirements in EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"'
                  for r in requirements]
    return ("\n".join(lines) + "\n").encode()


def _entry_points():
    lines = ["[console_scripts]"] + [f"{name} = {target}"
                                     for name, target in SCRIPTS.items()]
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
        (f"{info}/entry_points.txt", _entry_points()),
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
    with open(os.path.join(info, "entry_points.txt"), "wb") as f:
        f.write(_entry_points())
    return _dist_info()
