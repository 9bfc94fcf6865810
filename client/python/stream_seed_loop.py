#!/usr/bin/env python3
"""Streams the seed loop from a running loopserve and prints x each step.

    client/python/stream_seed_loop.py --server localhost:50051 --num_steps 5
"""

import argparse
import sys

import grpc

from loopserve_client import LoopClient, from_value


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--pipeline", default="seed-loop")
    parser.add_argument("--num_steps", type=int, default=5)
    parser.add_argument("--x", type=int, default=0)
    args = parser.parse_args()

    client = LoopClient(args.server)
    try:
        for kind, event in client.run(args.pipeline,
                                      {"num_steps": args.num_steps, "x": args.x}):
            if kind == "started":
                print(f"started {event.run_id}")
            elif kind == "iteration":
                print(f"iteration {event.index + 1}/{event.total}: "
                      f"x = {from_value(event.values['x'])}")
            elif kind == "result":
                print(f"result: x = {from_value(event.outputs['x'])} "
                      f"({event.stats.iterations} iterations, "
                      f"{event.stats.run_ms:.3f} ms)")
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
