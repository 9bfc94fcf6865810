"""The Open Inference Protocol front, driven by Triton's own Python client
(tritonclient.grpc, pinned in scripts/requirements.txt): probes, metadata,
infer, and the decoupled stream (start_stream, async_stream_infer: a
response per iteration, the last one flagged final). The one request
tritonclient will not send (a datatype it does not know) goes through the
stubs tritonclient itself carries (tritonclient.grpc.service_pb2).

    LOOPSERVE_GRPC=127.0.0.1:PORT LOOPSERVE_METRICS=127.0.0.1:PORT \\
    python oip_client_test.py
"""

import os
import queue
import struct
import sys
import unittest

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "client", "python"))

import loopserve  # noqa: E402
from server_metrics import runs_total, wait_for_runs  # noqa: E402

TARGET = os.environ["LOOPSERVE_GRPC"]
PROMPT = "a handwritten seven"


def text(name, value):
    tensor = triton.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return tensor


def int64(name, value):
    tensor = triton.InferInput(name, [1], "INT64")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int64))
    return tensor


def digits_inputs(steps=4, seed=7):
    return [text("prompt", PROMPT), int64("num_inference_steps", steps),
            int64("seed", seed)]


class StreamResponses:
    """start_stream's callback: every response (or error) in order."""

    def __init__(self):
        self.queue = queue.Queue()

    def __call__(self, result, error):
        self.queue.put((result, error))

    def until_final(self, request_ids, errors=0, timeout=60):
        """({request id: [result, ...]}, [error, ...]) once each id has had
        its final response and `errors` errors came. (tritonclient hands
        an in-band error to the callback without its request's id.)"""
        by_id, failures, open_ids = {}, [], set(request_ids)
        while open_ids or len(failures) < errors:
            result, error = self.queue.get(timeout=timeout)
            if error is not None:
                failures.append(error)
                continue
            response = result.get_response()
            by_id.setdefault(response.id, []).append(result)
            if response.parameters["triton_final_response"].bool_param:
                open_ids.discard(response.id)
        return by_id, failures


class OipTest(unittest.TestCase):
    def setUp(self):
        self.client = triton.InferenceServerClient(TARGET)

    def tearDown(self):
        self.client.close()

    def test_probes_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("digits-text"))
        self.assertFalse(self.client.is_model_ready("no-such-model"))
        self.assertEqual(self.client.get_server_metadata().name, "loopserve")
        metadata = self.client.get_model_metadata("digits-text")
        inputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}
        self.assertEqual(inputs["prompt"], ("BYTES", [1]))
        self.assertEqual(inputs["num_inference_steps"], ("INT64", [1]))
        self.assertEqual(inputs["guidance_scale"], ("FP64", [1]))
        self.assertEqual(inputs["latents"], ("FP32", [-1]))
        self.assertEqual([t.name for t in metadata.outputs],
                         ["latents", "denoised", "image", "preview_png"])
        as_json = self.client.get_model_metadata("digits-text", as_json=True)
        self.assertEqual(as_json["name"], "digits-text")
        with self.assertRaises(InferenceServerException) as error:
            self.client.get_model_metadata("digits-text", model_version="2")
        self.assertEqual(error.exception.status(), "StatusCode.NOT_FOUND")

    def test_infer_returns_what_the_loopserve_api_returns(self):
        result = self.client.infer("digits-text", digits_inputs(seed=11),
                                   request_id="one")
        response = result.get_response()
        self.assertEqual(response.id, "one")
        self.assertEqual(response.parameters["iterations"].int64_param, 4)
        image = result.as_numpy("image")
        self.assertEqual((image.shape, image.dtype),
                         ((1, 64, 64, 3), np.uint8))
        client = loopserve.LoopClient(TARGET)
        expected = [e for kind, e in client.run(
            "digits-text", {"prompt": PROMPT, "num_inference_steps": 4,
                            "seed": 11})
            if kind == "result"][0]
        np.testing.assert_array_equal(
            image, loopserve.from_value(expected.outputs["image"]))
        client.close()
        # Only the outputs asked for.
        only = self.client.infer(
            "digits-text", digits_inputs(steps=2),
            outputs=[triton.InferRequestedOutput("latents")])
        self.assertEqual([o.name for o in only.get_response().outputs],
                         ["latents"])

    def test_infer_errors_name_the_input(self):
        with self.assertRaises(InferenceServerException) as error:
            self.client.infer("digits-text",
                              [int64("num_inference_steps", -3)])
        self.assertEqual(error.exception.status(),
                         "StatusCode.INVALID_ARGUMENT")
        self.assertIn("num_inference_steps", error.exception.message())
        with self.assertRaises(InferenceServerException) as error:
            self.client.infer("no-such-model", digits_inputs())
        self.assertEqual(error.exception.status(), "StatusCode.NOT_FOUND")

    def test_a_datatype_tritonclient_would_not_send(self):
        # tritonclient checks datatypes before sending; a raw request shows
        # what the server says of one it does not know.
        channel = grpc.insecure_channel(TARGET)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="num_inference_steps", datatype="NOPE", shape=[1])
        with self.assertRaises(grpc.RpcError) as error:
            stub.ModelInfer(pb.ModelInferRequest(
                model_name="digits-text", inputs=[tensor],
                raw_input_contents=[struct.pack("<q", 4)]))
        self.assertEqual(error.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("num_inference_steps", error.exception.details())
        channel.close()

    def test_decoupled_stream_a_response_per_iteration_then_the_final(self):
        responses = StreamResponses()
        self.client.start_stream(callback=responses)
        bad = digits_inputs()
        bad[2] = triton.InferInput("seed", [2], "INT64")  # two for one
        bad[2].set_data_from_numpy(np.array([1, 2], dtype=np.int64))
        self.client.async_stream_infer(
            "digits-text", digits_inputs(steps=3), request_id="a",
            parameters={"values": "latents", "preview": True})
        self.client.async_stream_infer("digits-text", bad, request_id="bad")
        self.client.async_stream_infer(
            "digits-text", digits_inputs(steps=2), request_id="b",
            parameters={"every": 2})
        by_id, errors = responses.until_final(["a", "b"], errors=1)
        self.client.stop_stream()

        error, = errors
        self.assertIn("INVALID_ARGUMENT", str(error))
        self.assertIn("seed", str(error))
        self.assertNotIn("bad", by_id)
        for rid, steps, sent in (("a", 3, [0, 1, 2]), ("b", 2, [1])):
            *iterations, final = by_id[rid]
            self.assertEqual(
                [r.get_response().parameters["iteration"].int64_param
                 for r in iterations], sent)
            self.assertTrue(all(
                r.get_response().parameters["total"].int64_param == steps
                for r in iterations))
            self.assertTrue(final.get_response().parameters[
                "triton_final_response"].bool_param)
            self.assertEqual(final.as_numpy("image").shape, (1, 64, 64, 3))
        first = by_id["a"][0]
        self.assertEqual(
            sorted(o.name for o in first.get_response().outputs),
            ["latents", "preview_png"])
        self.assertEqual(first.as_numpy("latents").shape, (1, 1, 8, 8))
        self.assertEqual(first.as_numpy("preview_png")[0][:8],
                         b"\x89PNG\r\n\x1a\n")
        # The same run as infer's, bit for bit.
        np.testing.assert_array_equal(
            by_id["a"][-1].as_numpy("image"),
            self.client.infer("digits-text",
                              digits_inputs(steps=3)).as_numpy("image"))

    def test_cancelling_the_stream_cancels_its_runs(self):
        before = runs_total("CANCELLED", "seed-loop")
        responses = StreamResponses()
        self.client.start_stream(callback=responses)
        self.client.async_stream_infer(
            "seed-loop", [int64("num_steps", 10**12), int64("x", 0)],
            request_id="endless", parameters={"every": 100000})
        result, error = responses.queue.get(timeout=60)
        self.assertIsNone(error)
        self.assertEqual(result.get_response().id, "endless")
        self.client.stop_stream(cancel_requests=True)
        self.assertEqual(
            wait_for_runs("CANCELLED", "seed-loop", before + 1), before + 1)
        # And the server goes on serving.
        self.assertTrue(self.client.infer(
            "digits-text", digits_inputs()).get_response().outputs)


if __name__ == "__main__":
    unittest.main(verbosity=2)
