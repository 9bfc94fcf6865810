"""The Open Inference Protocol front, as a Triton client drives it: stubs
generated from proto/inference/grpc_service.proto by Debian's
grpc_python_plugin (build/python), raw tensors, request parameters, and
ModelStreamInfer's decoupled responses.

    LOOPSERVE_GRPC=127.0.0.1:PORT LOOPSERVE_METRICS=127.0.0.1:PORT \\
    LOOPSERVE_PYTHON_STUBS=build/python python3 oip_client_test.py
"""

import os
import struct
import sys
import unittest

import grpc
import numpy as np

sys.path.insert(0, os.environ["LOOPSERVE_PYTHON_STUBS"])
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "client", "python"))

from inference import grpc_service_pb2 as pb  # noqa: E402
from inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402
import loopserve  # noqa: E402
from server_metrics import runs_total, wait_for_runs  # noqa: E402

TARGET = os.environ["LOOPSERVE_GRPC"]
Input = pb.ModelInferRequest.InferInputTensor


def bytes_input(name, text):
    """A BYTES input in Triton's raw form: 4-byte length, then the bytes."""
    data = text.encode()
    return Input(name=name, datatype="BYTES", shape=[1]), \
        struct.pack("<I", len(data)) + data


def int_input(name, value):
    return Input(name=name, datatype="INT64", shape=[1]), struct.pack("<q", value)


def request(model, rid, inputs, **parameters):
    r = pb.ModelInferRequest(model_name=model, id=rid,
                             inputs=[i for i, _ in inputs],
                             raw_input_contents=[raw for _, raw in inputs])
    for key, value in parameters.items():
        if isinstance(value, bool):
            r.parameters[key].bool_param = value
        elif isinstance(value, int):
            r.parameters[key].int64_param = value
        else:
            r.parameters[key].string_param = value
    return r


def digits(rid, steps=4, seed=7, **parameters):
    return request("digits-text", rid, [
        bytes_input("prompt", "a handwritten seven"),
        int_input("num_inference_steps", steps), int_input("seed", seed)],
        **parameters)


def outputs(response):
    """{name: numpy array} of a ModelInferResponse's raw outputs."""
    types = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "UINT8": "|u1"}
    result = {}
    for output, raw in zip(response.outputs, response.raw_output_contents):
        if output.datatype == "BYTES":
            (length,) = struct.unpack_from("<I", raw)
            result[output.name] = raw[4:4 + length]
        else:
            result[output.name] = np.frombuffer(
                raw, types[output.datatype]).reshape(tuple(output.shape))
    return result




class OipTest(unittest.TestCase):
    def setUp(self):
        self.channel = grpc.insecure_channel(TARGET)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def tearDown(self):
        self.channel.close()

    def test_probes_and_metadata(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest()).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest()).ready)
        self.assertTrue(self.stub.ModelReady(
            pb.ModelReadyRequest(name="digits-text")).ready)
        self.assertFalse(self.stub.ModelReady(
            pb.ModelReadyRequest(name="no-such-model")).ready)
        self.assertEqual(
            self.stub.ServerMetadata(pb.ServerMetadataRequest()).name,
            "loopserve")
        metadata = self.stub.ModelMetadata(
            pb.ModelMetadataRequest(name="digits-text"))
        inputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}
        self.assertEqual(inputs["prompt"], ("BYTES", [1]))
        self.assertEqual(inputs["num_inference_steps"], ("INT64", [1]))
        self.assertEqual(inputs["guidance_scale"], ("FP64", [1]))
        self.assertEqual(inputs["latents"], ("FP32", [-1]))
        self.assertEqual([t.name for t in metadata.outputs],
                         ["latents", "denoised", "image", "preview_png"])
        with self.assertRaises(grpc.RpcError) as error:
            self.stub.ModelMetadata(
                pb.ModelMetadataRequest(name="digits-text", version="2"))
        self.assertEqual(error.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_infer_returns_what_the_loopserve_api_returns(self):
        response = self.stub.ModelInfer(digits("one", seed=11))
        self.assertEqual(response.id, "one")
        self.assertEqual(response.parameters["iterations"].int64_param, 4)
        image = outputs(response)["image"]
        self.assertEqual(image.shape, (1, 64, 64, 3))
        client = loopserve.LoopClient(TARGET)
        result = [e for kind, e in client.run(
            "digits-text", {"prompt": "a handwritten seven",
                            "num_inference_steps": 4, "seed": 11})
            if kind == "result"][0]
        np.testing.assert_array_equal(
            image, loopserve.from_value(result.outputs["image"]))
        client.close()

    def test_infer_errors_name_the_input(self):
        bad = digits("bad")
        bad.inputs[1].datatype = "NOPE"
        with self.assertRaises(grpc.RpcError) as error:
            self.stub.ModelInfer(bad)
        self.assertEqual(error.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("num_inference_steps", error.exception.details())
        with self.assertRaises(grpc.RpcError) as error:
            self.stub.ModelInfer(request("digits-text", "x", [
                int_input("num_inference_steps", -3)]))
        self.assertEqual(error.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("num_inference_steps", error.exception.details())

    def test_stream_interleaves_requests_and_reports_errors_in_band(self):
        bad = digits("bad")
        bad.inputs[2].shape[:] = [2]  # one INT64 given for two
        requests = [digits("a", steps=3, values="latents", preview=True),
                    bad, digits("b", steps=2, every=2),
                    pb.ModelInferRequest(model_name="nope", id="c")]
        by_id = {}
        for response in self.stub.ModelStreamInfer(iter(requests)):
            by_id.setdefault(response.infer_response.id, []).append(response)
        self.assertIn("INVALID_ARGUMENT", by_id["bad"][0].error_message)
        self.assertIn("seed", by_id["bad"][0].error_message)
        self.assertIn("NOT_FOUND", by_id["c"][0].error_message)
        for rid, steps, sent in (("a", 3, [0, 1, 2]), ("b", 2, [1])):
            responses = [r.infer_response for r in by_id[rid]]
            self.assertTrue(all(not r.error_message for r in by_id[rid]))
            *iterations, final = responses
            self.assertEqual(
                [r.parameters["iteration"].int64_param for r in iterations],
                sent)
            self.assertTrue(all(r.parameters["total"].int64_param == steps
                                for r in iterations))
            self.assertTrue(
                final.parameters["triton_final_response"].bool_param)
            self.assertEqual(outputs(final)["image"].shape, (1, 64, 64, 3))
        first = outputs(by_id["a"][0].infer_response)
        self.assertEqual(sorted(first), ["latents", "preview_png"])
        self.assertEqual(first["preview_png"][:8], b"\x89PNG\r\n\x1a\n")
        # The same run as ModelInfer's, bit for bit.
        final_a = outputs(by_id["a"][-1].infer_response)["image"]
        np.testing.assert_array_equal(
            final_a, outputs(self.stub.ModelInfer(digits("again", steps=3)))["image"])

    def test_cancelling_the_stream_cancels_its_runs(self):
        before = runs_total("CANCELLED", "seed-loop")
        endless = request("seed-loop", "endless", [
            int_input("num_steps", 10**12), int_input("x", 0)], every=100000)
        call = self.stub.ModelStreamInfer(iter([endless]))
        first = next(call)
        self.assertEqual(first.infer_response.id, "endless")
        call.cancel()
        self.assertEqual(
            wait_for_runs("CANCELLED", "seed-loop", before + 1), before + 1)
        # And the server goes on serving.
        self.assertTrue(self.stub.ModelInfer(digits("after")).outputs)


if __name__ == "__main__":
    unittest.main(verbosity=2)
