"""loopserve's Python client.

    import loopserve

    pipe = loopserve.RemotePipeline("localhost:50051", "digits-text")
    image = pipe(prompt="a handwritten seven")["image"]   # numpy arrays
    for step in pipe.stream(prompt="a handwritten seven"):
        print(step.index, step.total, step.preview[:8])    # PNG bytes

RemotePipeline (loopserve.pipeline) runs one pipeline as a callable;
LoopClient (loopserve.client) is the whole LoopPipelineService.

Installed (pip install ./client/python) the package carries its gRPC
modules. From a source tree it takes them from the build
(build/python, or $LOOPSERVE_PYTHON_STUBS).
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
if not os.path.exists(os.path.join(_HERE, "v1", "loopserve_pb2.py")):
    _STUBS = os.environ.get(
        "LOOPSERVE_PYTHON_STUBS",
        os.path.join(_HERE, "..", "..", "..", "build", "python"))
    __path__.append(os.path.join(_STUBS, "loopserve"))  # noqa: F821

from loopserve.client import LoopClient, from_value, to_value  # noqa: E402
from loopserve.pipeline import RemotePipeline, Result, Step  # noqa: E402

__version__ = "0.1.0"
__all__ = ["LoopClient", "RemotePipeline", "Result", "Step", "from_value",
           "to_value"]
