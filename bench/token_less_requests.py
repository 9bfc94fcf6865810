#!/usr/bin/env python3
"""Issue #28's token-less requests against a running loopserve with
--auth_tokens_file: four clients at once, each sending a large request
without a token, over HTTP (a body of --size MB to POST .../seed-loop:run)
or gRPC (a loopserve.v1 RunRequest of --size MB, over TLS with --ca). Prints
the server's peak RSS (VmHWM) before and after, and what each client got.

    build/app/loopserve --http_port=18090 --auth_tokens_file=tokens ...
    python3 bench/token_less_requests.py --pid PID --http 127.0.0.1:18090
    .venv/bin/python bench/token_less_requests.py --pid PID \\
        --grpc localhost:50051 --ca ca.pem --size 60
"""

import argparse
import os
import socket
import sys
import threading
import time


def peak_mb(pid, field="VmHWM"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024


def http_client(address, size, answers):
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    n = size << 20
    s.sendall(f"POST /v1/pipelines/seed-loop:run HTTP/1.1\r\nHost: x\r\n"
              f"Content-Length: {n}\r\n\r\n".encode())
    chunk = b'{"a":' + b"1" * (1 << 20)
    sent = 0
    try:
        while sent < n:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    try:
        answer = s.recv(64).split(b"\r\n")[0].decode()
    except OSError as e:
        answer = repr(e)
    answers.append(f"{sent >> 20} MB sent, {answer}")


def grpc_client(address, ca, size, answers):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "client", "python"))
    import grpc
    from loopserve.v1 import loopserve_pb2 as pb
    from loopserve.v1 import loopserve_pb2_grpc as pb_grpc
    credentials = grpc.ssl_channel_credentials(open(ca, "rb").read())
    channel = grpc.secure_channel(address, credentials, options=[
        ("grpc.max_send_message_length", -1)])
    stub = pb_grpc.LoopPipelineServiceStub(channel)
    request = pb.RunRequest(pipeline="seed-loop", inputs={
        "num_steps": pb.Value(int64_value=1),
        "x": pb.Value(tensor=pb.Tensor(datatype="UINT8", shape=[size << 20],
                                       raw_contents=bytes(size << 20)))})
    try:
        for _ in stub.Run(request):
            pass
        answers.append("OK")
    except grpc.RpcError as e:
        answers.append(f"{e.code().name}: {e.details()[:60]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--http")
    parser.add_argument("--grpc")
    parser.add_argument("--ca")
    parser.add_argument("--size", type=int, default=256, help="MB each")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    before = peak_mb(args.pid)
    answers = []
    if args.http:
        target = lambda: http_client(args.http, args.size, answers)
    else:
        target = lambda: grpc_client(args.grpc, args.ca, args.size, answers)
    threads = [threading.Thread(target=target) for _ in range(args.clients)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"peak RSS {before} MB before, {peak_mb(args.pid)} MB after "
          f"({time.time() - start:.2f} s); each client: {answers}")


if __name__ == "__main__":
    main()
