#!/usr/bin/env python3
"""Replays issue #14's black-box findings against a running loopserve and
prints what each costs now:

  1. a [1]*50000 FP32 tensor (50 KB on the wire): the time to its refusal,
     and a 3-step run's time while four such requests arrive at once
     (before: each held a worker for over 10 s; the run waited 7.7 s);
  2. four BLOCK streams that read one message and stop: how long until a
     fifth client is served (before: never, while they stayed connected);
  3. a 1 MB pipeline name and a 4 MB request_id: the code and the size of
     the message that comes back.

    build/app/loopserve --port=50061 --metrics_port=0 \\
        --max_concurrent_runs=4 --max_queued_runs=0 --stream_idle_timeout_s=2
    .venv/bin/python bench/hardening_probe.py --server localhost:50061

Needs the Python stubs the build generates (build/python).
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "client", "python"))
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from loopserve.v1 import loopserve_pb2 as pb  # noqa: E402
from loopserve.v1 import loopserve_pb2_grpc as pb_grpc  # noqa: E402


def seed_run(steps, x):
    return pb.RunRequest(pipeline="seed-loop", inputs={
        "num_steps": pb.Value(int64_value=steps), "x": x})


def rank_attack(stub):
    x = pb.Value(tensor=pb.Tensor(datatype="FP32", shape=[1] * 50000,
                                  raw_contents=b"\0" * 4))
    start = time.perf_counter()
    try:
        for _ in stub.Run(seed_run(3, x)):
            pass
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    return code, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="localhost:50051")
    args = parser.parse_args()
    channel = grpc.insecure_channel(args.server, options=[
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1)])
    stub = pb_grpc.LoopPipelineServiceStub(channel)

    code, seconds = rank_attack(stub)
    print(f"rank 50000: {code} in {seconds * 1000:.1f} ms")
    attacks = [threading.Thread(target=rank_attack, args=(stub,))
               for _ in range(4)]
    for t in attacks:
        t.start()
    start = time.perf_counter()
    for _ in stub.Run(seed_run(3, pb.Value(int64_value=0))):
        pass
    print(f"a 3-step run beside 4 rank attacks: "
          f"{(time.perf_counter() - start) * 1000:.1f} ms")
    for t in attacks:
        t.join()

    # Four stalled readers of 1 MB iterations, each on its own channel.
    big = pb.Value(tensor=pb.Tensor(
        datatype="FP32", shape=[256 * 1024],
        raw_contents=np.zeros(256 * 1024, np.float32).tobytes()))
    stalled = []
    for _ in range(4):
        c = grpc.insecure_channel(args.server)
        stream = pb_grpc.LoopPipelineServiceStub(c).Run(seed_run(10**6, big))
        next(stream)  # RunStarted, then nothing more is read
        stalled.append((c, stream))
    start = time.perf_counter()
    while True:
        try:
            for _ in stub.Run(seed_run(2, pb.Value(int64_value=0))):
                pass
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            time.sleep(0.05)
    print(f"four stalled readers: a new client served after "
          f"{time.perf_counter() - start:.2f} s")
    for c, stream in stalled:
        stream.cancel()
        c.close()

    for what, request in [
            ("1 MB pipeline name", pb.RunRequest(pipeline="p" * (1 << 20))),
            ("4 MB request_id", pb.RunRequest(pipeline="seed-loop",
                                              request_id="r" * (4 << 20)))]:
        try:
            for _ in stub.Run(request):
                pass
        except grpc.RpcError as e:
            print(f"{what}: {e.code().name}, a {len(e.details())}-byte "
                  f"message")


if __name__ == "__main__":
    main()
