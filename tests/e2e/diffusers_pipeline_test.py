"""loopserve's digits-ddim against diffusers' own DDIMPipeline driving the
same shipped model: the same seed and steps give the same image, bit for
bit, unprompted and prompted; and the prompted digit is the one the
shipped classifier sees.

    LOOPSERVE_GRPC=127.0.0.1:PORT SOURCE_DIR=. python diffusers_pipeline_test.py
"""

import os
import sys
import types
import unittest

import diffusers
import numpy as np
import torch

SOURCE_DIR = os.environ["SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE_DIR, "client", "python"))
import loopserve  # noqa: E402

TARGET = os.environ["LOOPSERVE_GRPC"]
MODELS = os.path.join(SOURCE_DIR, "deploy", "models", "digits")


class DigitsUNet(torch.nn.Module):
    """The shipped TorchScript UNet as diffusers' pipelines call a UNet,
    unet(sample, t).sample, conditioned on one digit (the one-hot the text
    encoder gives its prompt) or on none (zeros), as loopserve's digits-ddim
    calls it."""

    def __init__(self, digit=None):
        super().__init__()
        self.model = torch.jit.load(os.path.join(MODELS, "unet.pt"))
        self.config = types.SimpleNamespace(sample_size=8, in_channels=1)
        self.digit = digit

    @property
    def dtype(self):
        return torch.float32

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, sample, t):
        condition = torch.zeros(sample.shape[0], 1, 10)
        if self.digit is not None:
            condition[:, 0, self.digit] = 1
        t = t.reshape(1).expand(sample.shape[0])
        return types.SimpleNamespace(
            sample=self.model(sample, t, condition))


def diffusers_ddim(seed, steps, digit=None):
    """DDIMPipeline's images: (x / 2 + 0.5).clamp(0, 1), NHWC."""
    pipe = diffusers.DDIMPipeline(unet=DigitsUNet(digit),
                                  scheduler=diffusers.DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(seed),
                num_inference_steps=steps, eta=0.0, output_type="np").images


def as_diffusers_image(latents):
    return np.clip(latents / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)


class DiffusersPipelineTest(unittest.TestCase):
    pipe = loopserve.RemotePipeline(TARGET, "digits-ddim")

    def test_unprompted_is_ddim_pipelines_image(self):
        for seed, steps in ((7, 10), (1, 25)):
            ours = self.pipe(seed=seed, num_inference_steps=steps)
            np.testing.assert_array_equal(
                as_diffusers_image(ours["latents"]),
                diffusers_ddim(seed, steps))

    def test_a_prompted_digit_is_ddim_pipelines_and_the_classifiers(self):
        classifier = torch.jit.load(os.path.join(MODELS, "classifier.pt"))
        for digit in (3, 7):
            ours = self.pipe(prompt=str(digit), seed=4,
                             num_inference_steps=25)["latents"]
            np.testing.assert_array_equal(
                as_diffusers_image(ours), diffusers_ddim(4, 25, digit))
            label = classifier(torch.from_numpy(ours.copy()).clamp(-1, 1))
            self.assertEqual(label.argmax(1).item(), digit)


if __name__ == "__main__":
    unittest.main(verbosity=2)
