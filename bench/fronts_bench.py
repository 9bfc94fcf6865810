#!/usr/bin/env python3
"""What each front costs a streamed run, side by side in one process:
loopserve.v1's Run, the Open Inference Protocol's ModelStreamInfer and
ModelInfer, and HTTP's server-sent events, all from Python against one
running server, interleaved, the same run each time.

    build/app/loopserve --http_port=8000 &
    LOOPSERVE_PYTHON_STUBS=build/python .venv/bin/python bench/fronts_bench.py \\
        --grpc localhost:50051 --http localhost:8000 --steps 50 --repeats 9

Prints, per front, the median time to the first streamed iteration and to
the run's end, and the end's ratio to loopserve.v1's.
"""

import argparse
import http.client
import json
import os
import statistics
import struct
import sys
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get(
    "LOOPSERVE_PYTHON_STUBS", os.path.join(HERE, "..", "build", "python")))
sys.path.insert(0, os.path.join(HERE, "..", "client", "python"))

from inference import grpc_service_pb2 as oip  # noqa: E402
from inference import grpc_service_pb2_grpc as oip_grpc  # noqa: E402
import loopserve  # noqa: E402

PROMPT = "a handwritten seven"


def v1_run(client, steps):
    start, first = time.perf_counter(), None
    for kind, _ in client.run("digits-text", {
            "prompt": PROMPT, "num_inference_steps": steps, "seed": 1},
            stream=["latents"], preview=True):
        if kind == "iteration" and first is None:
            first = time.perf_counter()
    return first - start, time.perf_counter() - start


def oip_request(steps, stream):
    Input = oip.ModelInferRequest.InferInputTensor
    prompt = PROMPT.encode()
    request = oip.ModelInferRequest(
        model_name="digits-text", id="bench",
        inputs=[Input(name="prompt", datatype="BYTES", shape=[1]),
                Input(name="num_inference_steps", datatype="INT64", shape=[1]),
                Input(name="seed", datatype="INT64", shape=[1])],
        raw_input_contents=[struct.pack("<I", len(prompt)) + prompt,
                            struct.pack("<q", steps), struct.pack("<q", 1)])
    if stream:
        request.parameters["values"].string_param = "latents"
        request.parameters["preview"].bool_param = True
    return request


def oip_stream(stub, steps):
    start, first = time.perf_counter(), None
    for response in stub.ModelStreamInfer(iter([oip_request(steps, True)])):
        if response.error_message:
            raise RuntimeError(response.error_message)
        if first is None:
            first = time.perf_counter()
    return first - start, time.perf_counter() - start


def oip_infer(stub, steps):
    start = time.perf_counter()
    stub.ModelInfer(oip_request(steps, False))
    end = time.perf_counter() - start
    return end, end


def http_sse(address, steps):
    body = json.dumps({
        "inputs": {"prompt": {"string_value": PROMPT},
                   "num_inference_steps": {"int64_value": str(steps)},
                   "seed": {"int64_value": "1"}},
        "stream": {"values": ["latents"], "preview": True}})
    start, first = time.perf_counter(), None
    connection = http.client.HTTPConnection(address)
    connection.request("POST", "/v1/pipelines/digits-text:run", body)
    response = connection.getresponse()
    while True:
        line = response.readline()
        if not line:
            break
        if line.startswith(b"event: iterations") and first is None:
            first = time.perf_counter()
        if line.startswith(b"event: error"):
            raise RuntimeError(response.readline())
    connection.close()
    return first - start, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc", default="localhost:50051")
    parser.add_argument("--http", default="localhost:8000")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    client = loopserve.LoopClient(args.grpc)
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(args.grpc))
    fronts = {
        "loopserve.v1 Run (stream)": lambda: v1_run(client, args.steps),
        "OIP ModelStreamInfer": lambda: oip_stream(stub, args.steps),
        "HTTP server-sent events": lambda: http_sse(args.http, args.steps),
        "OIP ModelInfer (final only)": lambda: oip_infer(stub, args.steps),
    }
    for run in fronts.values():  # warm up every path
        run()
    times = {name: [] for name in fronts}
    for _ in range(args.repeats):
        for name, run in fronts.items():
            times[name].append(run())
    base = statistics.median(
        end for _, end in times["loopserve.v1 Run (stream)"]) * 1000
    print(f"digits-text, {args.steps} steps, latents and a PNG preview streamed "
          f"per step (ModelInfer: none); median of {args.repeats}")
    print(f"{'front':30} {'first iteration':>16} {'run':>10} {'vs v1':>7}")
    for name, samples in times.items():
        first = statistics.median(f for f, _ in samples) * 1000
        end = statistics.median(e for _, e in samples) * 1000
        print(f"{name:30} {first:13.2f} ms {end:7.1f} ms {end / base:6.2f}x")


if __name__ == "__main__":
    main()
