"""RemotePipeline: a pipeline on a loopserve server, called like a local one.

    pipe = RemotePipeline("localhost:50051", "digits-text")
    out = pipe(prompt="a handwritten seven", num_inference_steps=20)
    out["image"]                           # a numpy array, by output name
    out.resolved_inputs["seed"]            # the seed the server drew
    pipe(prompt="seven", seed=3, output_type="pil").images[0]  # PIL image

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

import numpy as np

from loopserve.client import LoopClient, from_value


OUTPUT_TYPES = ("np", "pil")


def _as_images(value):
    """An image tensor (uint8, batch × height × width × 1, 3 or 4 channels)
    as a list of PIL images, one per batch element; anything else as it
    is."""
    if not (isinstance(value, np.ndarray) and value.dtype == np.uint8 and
            value.ndim == 4 and value.shape[-1] in (1, 3, 4)):
        return value
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            'output_type="pil" needs Pillow: pip install pillow '
            '(or "loopserve[pil]")') from error
    return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            for image in value]


def _check_output_type(output_type):
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type {output_type!r}: expected one of "
                         f"{', '.join(OUTPUT_TYPES)}")


def _outputs(values, output_type):
    outputs = {name: from_value(v) for name, v in values.items()}
    if output_type == "pil":
        outputs = {name: _as_images(v) for name, v in outputs.items()}
    return outputs


class PipelineOutput(dict):
    """A run's final outputs by name (numpy arrays for tensors; lists of PIL
    images for output_type="pil"), and what else the run reported."""

    def __init__(self, outputs, resolved_inputs, stats, run_id):
        super().__init__(outputs)
        # Every input the server filled (defaults, the drawn seed): with
        # the call's own inputs, they reproduce the run bit for bit.
        self.resolved_inputs = resolved_inputs
        self.stats = stats        # loopserve.v1.RunStats
        self.run_id = run_id

    @property
    def images(self):
        """The "image" output, as diffusers' pipelines return theirs."""
        if "image" not in self:
            raise AttributeError(
                f"this pipeline has no 'image' output; it has "
                f"{', '.join(sorted(self)) or 'none'}")
        return self["image"]


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

    def __call__(self, *, output_type: str = "np",
                 **inputs) -> PipelineOutput:
        """Runs the pipeline: its final outputs (numpy arrays for tensors;
        output_type="pil": image tensors as lists of PIL images), with the
        run's resolved inputs and stats."""
        _check_output_type(output_type)
        started = result = None
        # Only the last iteration is sent, and its values are not kept.
        for kind, event in self._client.run(
                self.name, inputs, every=2**32 - 1, timeout=self._timeout):
            if kind == "started":
                started = event
            elif kind == "result":
                result = event
        return PipelineOutput(
            _outputs(result.outputs, output_type),
            resolved_inputs={k: from_value(v)
                             for k, v in started.resolved_inputs.items()},
            stats=result.stats, run_id=started.run_id)

    def stream(self, *, output_type: str = "np",
               **inputs) -> Iterator[Union[Step, Result]]:
        """Yields a Step per streamed iteration, then the Result (its
        outputs as __call__'s, by output_type)."""
        _check_output_type(output_type)
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
                        outputs=_outputs(event.outputs, output_type),
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
