"""LoopClient: loopserve's LoopPipelineService, message by message.

RemotePipeline (loopserve.pipeline) is the friendlier front; this is the
whole API:

    client = LoopClient("localhost:50051")
    for kind, event in client.run("seed-loop", {"num_steps": 5, "x": 0}):
        ...

Checkpoints: every iteration of a run with checkpoints=True carries one
(bytes); resume() continues that run from it, on any replica of the same
deployment, or forks it with other inputs read during the loop:

    checkpoints = [it.checkpoint for kind, it in client.run(
        "digits-text", {"prompt": "seven"}, checkpoints=True)
        if kind == "iteration"]
    for event in client.resume(checkpoints[10], {"guidance_scale": 7.0}):
        ...

Over TLS, with a token (a server with --tls_cert_file, --auth_tokens_file):

    client = LoopClient("loopserve.example:50051", tls_ca_file="ca.pem",
                        token="...")
"""

import grpc
import numpy as np

from loopserve.v1 import loopserve_pb2 as pb
from loopserve.v1 import loopserve_pb2_grpc as pb_grpc

_NUMPY_TO_DATATYPE = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8",
    np.dtype(np.int8): "INT8", np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}
_DATATYPE_TO_NUMPY = {v: k for k, v in _NUMPY_TO_DATATYPE.items()}


def to_value(obj):
    """A Python value (int, float, bool, str, list, numpy array) as a Value."""
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("<"))
        return pb.Value(tensor=pb.Tensor(
            datatype=_NUMPY_TO_DATATYPE[np.dtype(obj.dtype.name)],
            shape=list(array.shape), raw_contents=array.tobytes()))
    if isinstance(obj, bool):
        return pb.Value(bool_value=obj)
    if isinstance(obj, int):
        return pb.Value(int64_value=obj)
    if isinstance(obj, float):
        return pb.Value(double_value=obj)
    if isinstance(obj, str):
        return pb.Value(string_value=obj)
    if isinstance(obj, (list, tuple)):
        return pb.Value(list_value=pb.ValueList(values=[to_value(v) for v in obj]))
    raise TypeError(f"cannot send a {type(obj).__name__}")


def from_value(value):
    """A Value as a Python value; tensors become numpy arrays."""
    kind = value.WhichOneof("kind")
    if kind == "tensor":
        t = value.tensor
        if t.datatype == "BF16":  # numpy has no bfloat16: widen to float32
            raw = np.frombuffer(t.raw_contents, "<u2").astype("<u4") << 16
            return raw.view("<f4").reshape(tuple(t.shape))
        dtype = _DATATYPE_TO_NUMPY[t.datatype].newbyteorder("<")
        return np.frombuffer(t.raw_contents, dtype).reshape(tuple(t.shape))
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    return getattr(value, kind) if kind else None


class LoopClient:
    """Lists, describes and runs loop pipelines on a loopserve server."""

    def __init__(self, target, tls_ca_file=None, tls_cert_file=None,
                 tls_key_file=None, token=None):
        """tls_ca_file: speak TLS, trusting the server certificates this PEM
        bundle signed; with tls_cert_file and tls_key_file, present this
        client certificate (mTLS). token: sent as `authorization: Bearer
        TOKEN` with every call."""
        options = [("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", -1)]
        if tls_ca_file is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            def read(path):
                if path is None:
                    return None
                with open(path, "rb") as f:
                    return f.read()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(tls_ca_file),
                private_key=read(tls_key_file),
                certificate_chain=read(tls_cert_file))
            self._channel = grpc.secure_channel(target, credentials,
                                                options=options)
        self._metadata = ((("authorization", "Bearer " + token),)
                          if token else None)
        self._stub = pb_grpc.LoopPipelineServiceStub(self._channel)

    def list(self):
        return list(self._stub.ListPipelines(
            pb.ListPipelinesRequest(), metadata=self._metadata).pipelines)

    def describe(self, name):
        return self._stub.DescribePipeline(
            pb.DescribePipelineRequest(name=name), metadata=self._metadata)

    def run(self, pipeline, inputs, stream=(), every=0, latest=False,
            outputs=(), timeout=None, preview=False, checkpoints=False):
        """Yields ("started", RunStarted), ("iteration", Iteration) ... and
        finally ("result", RunResult). With preview=True each iteration
        carries preview_png (PNG bytes); with checkpoints=True, checkpoint
        (bytes for resume()). Raises grpc.RpcError on failure."""
        return self._run(pb.RunRequest(
            pipeline=pipeline,
            inputs={k: to_value(v) for k, v in inputs.items()},
            stream=self._stream(stream, every, latest, preview, checkpoints),
            outputs=list(outputs)), timeout)

    def resume(self, checkpoint, inputs=None, stream=(), every=0,
               latest=False, outputs=(), timeout=None, preview=False,
               checkpoints=False):
        """Continues the run `checkpoint` (an Iteration.checkpoint) was taken
        from, after its iteration: yields as run() does, the iterations
        after it. `inputs` fork the run: inputs read during the loop may
        change; those consumed before it (seed, num_inference_steps) may
        not (grpc.StatusCode.INVALID_ARGUMENT)."""
        return self._run(pb.RunRequest(
            resume_from=checkpoint,
            inputs={k: to_value(v) for k, v in (inputs or {}).items()},
            stream=self._stream(stream, every, latest, preview, checkpoints),
            outputs=list(outputs)), timeout)

    @staticmethod
    def _stream(values, every, latest, preview, checkpoints):
        return pb.StreamOptions(
            values=list(values), every=every,
            backpressure=(pb.StreamOptions.LATEST if latest
                          else pb.StreamOptions.BLOCK),
            preview=preview, checkpoints=checkpoints)

    def _run(self, request, timeout):
        call = self._stub.Run(request, timeout=timeout,
                              metadata=self._metadata)
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "iterations":
                    for item in event.iterations.items:
                        yield "iteration", item
                else:
                    yield kind, getattr(event, kind)
        finally:
            # The generator closed early (the caller stopped reading):
            # cancel the call, which cancels the run. A no-op once done.
            call.cancel()

    def close(self):
        self._channel.close()
