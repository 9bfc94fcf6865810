"""loopserve's Python client.

    import loopserve

    pipe = loopserve.RemotePipeline("localhost:50051", "digits-text")
    out = pipe(prompt="a handwritten seven")
    out["image"]                  # numpy arrays, by output name
    out.resolved_inputs["seed"]   # what reproduces the run
    pipe(prompt="seven", output_type="pil").images[0]   # a PIL image
    for step in pipe.stream(prompt="a handwritten seven"):
        print(step.index, step.total, step.preview[:8])    # PNG bytes

RemotePipeline (loopserve.pipeline) runs one pipeline as a callable;
LoopClient (loopserve.client) is the whole LoopPipelineService. The package
carries its gRPC modules (loopserve.v1); it needs grpcio, protobuf and
numpy, and Pillow for output_type="pil" (pip install "./client/python[pil]").
"""

from loopserve.client import LoopClient, from_value, to_value
from loopserve.pipeline import PipelineOutput, RemotePipeline, Result, Step

__version__ = "0.1.0"
__all__ = ["LoopClient", "PipelineOutput", "RemotePipeline", "Result",
           "Step", "from_value", "to_value"]
