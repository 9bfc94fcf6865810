#!/usr/bin/env python3
"""Issue #28's cancel storm against a running loopserve, as a client would
send it: N streams (ModelStreamInfer), each with R long seed-loop runs
(num_steps 1e6, every 1000), that read 10 responses and cancel, every
0.2 s; repeated A times. Prints how many attempts the server survived
(it is alive when ServerLive answers after the attempt).

    build/app/loopserve --port=50071 --metrics_port=0 --http_port=0 &
    .venv/bin/python bench/oip_cancel_storm.py --server localhost:50071
"""

import argparse
import threading
import time

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc


def request(i):
    r = pb.ModelInferRequest(model_name="seed-loop", id=str(i))
    for name, value in (("num_steps", 1_000_000), ("x", 0)):
        t = r.inputs.add(name=name, datatype="INT64", shape=[1])
        t.contents.int64_contents.append(value)
    r.parameters["every"].int64_param = 1000
    return r


def stream(stub, runs):
    call = stub.ModelStreamInfer(iter([request(i) for i in range(runs)]))
    try:
        for n, _ in enumerate(call):
            if n >= 9:
                break
    except grpc.RpcError:
        pass
    call.cancel()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--attempts", type=int, default=15)
    args = parser.parse_args()
    channel = grpc.insecure_channel(args.server)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    survived = 0
    for attempt in range(args.attempts):
        threads = [threading.Thread(target=stream, args=(stub, args.runs))
                   for _ in range(args.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)
        try:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            survived += 1
        except grpc.RpcError as e:
            print(f"attempt {attempt + 1}: the server is gone ({e.code().name})")
            break
    print(f"survived {survived} of {args.attempts} attempts "
          f"({args.streams} streams x {args.runs} runs each)")


if __name__ == "__main__":
    main()
