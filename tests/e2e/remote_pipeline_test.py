"""The pip-installed loopserve package against a real server: run it from
a virtual environment where `pip install ./client/python` put it.

    LOOPSERVE_GRPC=127.0.0.1:PORT LOOPSERVE_METRICS=127.0.0.1:PORT \\
    venv/bin/python remote_pipeline_test.py
"""

import os
import unittest

import grpc
import numpy as np

import loopserve
from server_metrics import runs_total, wait_for_runs  # noqa: E402

TARGET = os.environ["LOOPSERVE_GRPC"]
PROMPT = "a handwritten seven"


class RemotePipelineTest(unittest.TestCase):
    def test_installed_not_borrowed_from_the_source_tree(self):
        self.assertIn("site-packages", loopserve.__file__)
        from loopserve.v1 import loopserve_pb2
        self.assertIn("site-packages", loopserve_pb2.__file__)

    def test_call_and_stream_agree_and_stream_yields_every_step(self):
        with loopserve.RemotePipeline(TARGET, "digits-text") as pipe:
            outputs = pipe(prompt=PROMPT, num_inference_steps=6, seed=5)
            self.assertEqual(outputs["image"].shape, (1, 64, 64, 3))
            self.assertEqual(outputs["image"].dtype, np.uint8)
            events = list(pipe.stream(prompt=PROMPT, num_inference_steps=6,
                                      seed=5))
        *steps, result = events
        self.assertTrue(all(isinstance(s, loopserve.Step) for s in steps))
        self.assertIsInstance(result, loopserve.Result)
        self.assertEqual([s.index for s in steps], list(range(6)))
        self.assertTrue(all(s.total == 6 for s in steps))
        self.assertTrue(all(s.preview.startswith(b"\x89PNG") for s in steps))
        self.assertEqual(steps[0].values["latents"].shape, (1, 1, 8, 8))
        np.testing.assert_array_equal(result.outputs["image"],
                                      outputs["image"])
        self.assertEqual(result.stats.iterations, 6)

    def test_a_call_reports_its_resolved_inputs_and_stats(self):
        pipe = loopserve.RemotePipeline(TARGET, "digits-text")
        out = pipe(prompt=PROMPT, num_inference_steps=3)
        self.assertIsInstance(out, loopserve.PipelineOutput)
        seed = out.resolved_inputs["seed"]
        self.assertIsInstance(seed, int)
        self.assertEqual(out.stats.iterations, 3)
        self.assertTrue(out.run_id)
        again = pipe(prompt=PROMPT, num_inference_steps=3, seed=seed)
        np.testing.assert_array_equal(again["image"], out["image"])
        # Only what the server filled: this call gave its seed.
        self.assertNotIn("seed", again.resolved_inputs)

    def test_pil_images_as_diffusers_returns_them(self):
        from PIL import Image
        pipe = loopserve.RemotePipeline(TARGET, "digits-text")
        array = pipe(prompt=PROMPT, num_inference_steps=3, seed=2)
        out = pipe(prompt=PROMPT, num_inference_steps=3, seed=2,
                   output_type="pil")
        self.assertEqual(len(out.images), 1)
        image = out.images[0]
        self.assertIsInstance(image, Image.Image)
        self.assertEqual((image.size, image.mode), ((64, 64), "RGB"))
        np.testing.assert_array_equal(np.asarray(image), array["image"][0])
        *_, result = pipe.stream(prompt=PROMPT, num_inference_steps=3,
                                 seed=2, output_type="pil")
        np.testing.assert_array_equal(np.asarray(result.outputs["image"][0]),
                                      array["image"][0])
        with self.assertRaisesRegex(ValueError, "output_type 'pt'"):
            pipe(prompt=PROMPT, output_type="pt")
        with self.assertRaisesRegex(AttributeError, "no 'image' output"):
            loopserve.RemotePipeline(TARGET, "seed-loop")(
                num_steps=1, x=0).images

    def test_the_resolved_seed_reproduces_the_run(self):
        pipe = loopserve.RemotePipeline(TARGET, "digits-text", preview=False)
        *steps, result = pipe.stream(prompt=PROMPT, num_inference_steps=4)
        self.assertIsNone(steps[0].preview)
        seed = result.resolved_inputs["seed"]
        again = pipe(prompt=PROMPT, num_inference_steps=4, seed=int(seed))
        np.testing.assert_array_equal(again["image"], result.outputs["image"])

    def test_closing_the_stream_cancels_the_run(self):
        before = runs_total("CANCELLED", "seed-loop")
        pipe = loopserve.RemotePipeline(TARGET, "seed-loop", every=100000)
        stream = pipe.stream(num_steps=10**12, x=0)
        self.assertEqual(next(stream).index, 99999)
        stream.close()
        self.assertEqual(
            wait_for_runs("CANCELLED", "seed-loop", before + 1), before + 1)

    def test_errors_name_the_input(self):
        pipe = loopserve.RemotePipeline(TARGET, "digits-text")
        with self.assertRaises(grpc.RpcError) as error:
            pipe(num_inference_steps=-1)
        self.assertEqual(error.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("num_inference_steps", error.exception.details())


if __name__ == "__main__":
    unittest.main(verbosity=2)
