"""RemotePipeline: a pipeline on a loopserve server, called like a local one.

    pipe = RemotePipeline("localhost:50051", "digits-text")
    outputs = pipe(prompt="a handwritten seven", num_inference_steps=20)
    outputs["image"]                       # a numpy array

    for event in pipe.stream(prompt="a handwritten seven"):
        if isinstance(event, Step):        # one per iteration
            event.index, event.total, event.values, event.preview
        else:                              # last: the Result
            event.outputs, event.stats, event.resolved_inputs

Closing the stream's generator (leaving the loop, or close()) cancels the
run on the server. Errors raise grpc.RpcError, whose code() and details()
name the input at fault.
"""

import dataclasses
from typing import Dict, Iterator, Optional, Union

from loopserve.client import LoopClient, from_value


@dataclasses.dataclass
class Step:
    """One iteration of the run's loop."""
    index: int            # 0-based
    total: int            # iterations the loop runs; 0 when unknown
    loop: str             # the loop block's path
    values: Dict[str, object]  # iteration values, numpy arrays for tensors
    preview: Optional[bytes]   # PNG of the step's prediction, when previewed
    dropped_before: int   # iterations skipped since the last (latest=True)


@dataclasses.dataclass
class Result:
    """The run's final outputs and what it took."""
    outputs: Dict[str, object]
    stats: object              # loopserve.v1.RunStats
    run_id: str
    # Every input the server filled (defaults, the drawn seed): with the
    # call's own inputs, they reproduce the run bit for bit.
    resolved_inputs: Dict[str, object]


class RemotePipeline:
    """A pipeline on a loopserve server, as a callable."""

    def __init__(self, target: str, name: str, *, token: str = None,
                 tls_ca_file: str = None, tls_cert_file: str = None,
                 tls_key_file: str = None, preview: bool = None,
                 every: int = 1, values=(), latest: bool = False,
                 timeout: float = None, client: LoopClient = None):
        """target: host:port of the server's gRPC port. token, tls_*: as
        LoopClient's. stream() options: preview (default: when the pipeline
        has one), every k-th iteration, the iteration values to send
        (default all), latest (drop stale iterations for a slow reader).
        timeout: seconds per run."""
        self.name = name
        self._client = client or LoopClient(
            target, tls_ca_file=tls_ca_file, tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file, token=token)
        self._description = None
        self._preview = preview
        self._every = every
        self._values = tuple(values)
        self._latest = latest
        self._timeout = timeout

    @property
    def description(self):
        """The pipeline's PipelineDescription (inputs, outputs, blocks)."""
        if self._description is None:
            self._description = self._client.describe(self.name)
        return self._description

    def __call__(self, **inputs) -> Dict[str, object]:
        """Runs the pipeline; its final outputs, numpy arrays for tensors."""
        result = None
        # Only the last iteration is sent, and its values are not kept.
        for kind, event in self._client.run(
                self.name, inputs, every=2**32 - 1, timeout=self._timeout):
            if kind == "result":
                result = event
        return {name: from_value(v) for name, v in result.outputs.items()}

    def stream(self, **inputs) -> Iterator[Union[Step, Result]]:
        """Yields a Step per streamed iteration, then the Result."""
        preview = self._preview
        if preview is None:
            preview = self.description.preview
        events = self._client.run(
            self.name, inputs, stream=self._values, every=self._every,
            latest=self._latest, preview=preview, timeout=self._timeout)
        started = None
        try:
            for kind, event in events:
                if kind == "started":
                    started = event
                elif kind == "iteration":
                    yield Step(
                        index=event.index, total=event.total, loop=event.loop,
                        values={k: from_value(v)
                                for k, v in event.values.items()},
                        preview=event.preview_png or None,
                        dropped_before=event.dropped_before)
                elif kind == "result":
                    yield Result(
                        outputs={k: from_value(v)
                                 for k, v in event.outputs.items()},
                        stats=event.stats,
                        run_id=started.run_id if started else "",
                        resolved_inputs={
                            k: from_value(v) for k, v in
                            (started.resolved_inputs.items() if started
                             else ())})
        finally:
            # A consumer that stopped early: cancel the call, and the run.
            events.close()

    def close(self):
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
