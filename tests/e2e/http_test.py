"""The HTTP front as curl and browsers use it: JSON, server-sent events
read as they arrive, errors with HTTP statuses, cancel by closing.

    LOOPSERVE_HTTP=127.0.0.1:PORT LOOPSERVE_GRPC=127.0.0.1:PORT \\
    LOOPSERVE_METRICS=127.0.0.1:PORT python3 http_test.py
"""

import base64
import http.client
import json
import os
import sys
import unittest
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "client", "python"))
import loopserve  # noqa: E402
from server_metrics import runs_total, wait_for_runs  # noqa: E402

HTTP = os.environ["LOOPSERVE_HTTP"]


def get(path):
    with urllib.request.urlopen(f"http://{HTTP}{path}") as response:
        return response.status, response.headers, response.read()


def post_error(path, body):
    """The HTTP status and JSON error of a refused POST."""
    try:
        urllib.request.urlopen(urllib.request.Request(
            f"http://{HTTP}{path}", data=body.encode(), method="POST"))
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    raise AssertionError(f"POST {path} {body} was not refused")


def events(response):
    """(event, data) of a text/event-stream, as each arrives."""
    name, data = None, ""
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode().rstrip("\n")
        if line == "":
            if name is not None:
                yield name, json.loads(data)
            name, data = None, ""
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


def start_run(pipeline, body):
    connection = http.client.HTTPConnection(HTTP, timeout=60)
    connection.request("POST", f"/v1/pipelines/{pipeline}:run",
                       json.dumps(body),
                       {"Content-Type": "application/json"})
    return connection, connection.getresponse()


def tensor(value):
    t = value["tensor"]
    dtype = {"FP32": "<f4", "UINT8": "|u1"}[t["datatype"]]
    return np.frombuffer(base64.b64decode(t["raw_contents"]), dtype).reshape(
        [int(d) for d in t["shape"]])




class HttpTest(unittest.TestCase):
    def test_health_pipelines_and_page(self):
        self.assertEqual(get("/healthz")[0], 200)
        self.assertEqual(get("/readyz")[0], 200)
        names = [p["name"] for p in json.loads(get("/v1/pipelines")[2])
                 ["pipelines"]]
        self.assertIn("digits-text", names)
        description = json.loads(get("/v1/pipelines/digits-text")[2])
        self.assertTrue(description["preview"])
        scheduler = [p for p in description["inputs"]
                     if p["name"] == "scheduler"][0]
        self.assertIn("euler-a", scheduler["choices"])
        status, headers, page = get("/")
        self.assertIn("text/html", headers["Content-Type"])
        self.assertIn(b'<script src="/app.js">', page)
        self.assertIn(b"events(response)", get("/app.js")[2])
        with self.assertRaises(urllib.error.HTTPError) as error:
            get("/v1/pipelines/nope")
        self.assertEqual(error.exception.code, 404)
        self.assertEqual(json.loads(error.exception.read())["code"],
                         "NOT_FOUND")

    def test_run_streams_events_and_matches_grpc(self):
        body = {"inputs": {"prompt": {"string_value": "a handwritten seven"},
                           "num_inference_steps": {"int64_value": "5"},
                           "seed": {"int64_value": "3"}},
                "stream": {"preview": True, "values": ["latents"]}}
        connection, response = start_run("digits-text", body)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Content-Type"], "text/event-stream")
        seen = list(events(response))
        connection.close()
        names = [name for name, _ in seen]
        self.assertEqual(names[0], "started")
        self.assertEqual(names[-2:], ["result", "end"])
        items = [item for name, data in seen if name == "iterations"
                 for item in data["items"]]
        self.assertEqual([int(i.get("index", 0)) for i in items],
                         [0, 1, 2, 3, 4])
        self.assertTrue(all(i["preview_png"].startswith(
            "data:image/png;base64,iVBORw0KGgo") for i in items))
        self.assertEqual(tensor(items[0]["values"]["latents"]).shape,
                         (1, 1, 8, 8))
        image = tensor(seen[-2][1]["outputs"]["image"])
        client = loopserve.LoopClient(os.environ["LOOPSERVE_GRPC"])
        result = [e for kind, e in client.run(
            "digits-text", {"prompt": "a handwritten seven",
                            "num_inference_steps": 5, "seed": 3})
            if kind == "result"][0]
        client.close()
        np.testing.assert_array_equal(
            image, loopserve.from_value(result.outputs["image"]))

    def test_events_arrive_as_they_happen_and_closing_cancels(self):
        before = runs_total("CANCELLED", "seed-loop")
        connection, response = start_run("seed-loop", {
            "inputs": {"num_steps": {"int64_value": "1000000000000"},
                       "x": {"int64_value": "0"}},
            "stream": {"every": 100000}})
        stream = events(response)
        self.assertEqual(next(stream)[0], "started")
        name, data = next(stream)  # long before the run could end
        self.assertEqual(name, "iterations")
        self.assertEqual(int(data["items"][0]["index"]), 99999)
        connection.close()
        self.assertEqual(
            wait_for_runs("CANCELLED", "seed-loop", before + 1), before + 1)

    def test_refusals_have_http_statuses(self):
        status, error = post_error("/v1/pipelines/digits-text:run",
                                   '{"inputs": {"num_inference_steps": '
                                   '{"int64_value": "-1"}}}')
        self.assertEqual((status, error["code"]), (400, "INVALID_ARGUMENT"))
        self.assertIn("num_inference_steps", error["message"])
        status, error = post_error("/v1/pipelines/digits-text:run",
                                   '{"inputz": {}}')
        self.assertEqual(status, 400)
        self.assertIn("not a RunRequest in JSON", error["message"])
        status, error = post_error("/v1/pipelines/nope:run", "{}")
        self.assertEqual((status, error["code"]), (404, "NOT_FOUND"))
        status, error = post_error("/v1/pipelines/digits-text:run",
                                   '{"pipeline": "seed-loop"}')
        self.assertEqual(status, 400)

    def test_a_run_that_fails_once_streaming_ends_with_an_error_event(self):
        connection, response = start_run("digits-text", {
            "inputs": {"num_inference_steps": {"int64_value": "3"},
                       "scheduler": {"string_value": "euler"},
                       "latents": {"tensor": {
                           "datatype": "FP32", "shape": ["1", "2", "8", "8"],
                           "raw_contents": base64.b64encode(
                               bytes(4 * 128)).decode()}}}})
        # Valid as a request; the block that reads it refuses it, after the
        # stream began: the stream ends with an error event.
        self.assertEqual(response.status, 200)
        seen = list(events(response))
        self.assertEqual([name for name, _ in seen], ["started", "error"])
        self.assertEqual(seen[-1][1]["code"], "INVALID_ARGUMENT")
        self.assertIn("prepare_latents", seen[-1][1]["message"])
        connection.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
