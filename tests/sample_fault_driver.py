"""Runs sample.py's main with the models stubbed out and a writer hook (test helper, not a test).

    python tests/sample_fault_driver.py MARKER PAUSE [sample.py flags...]

The DiT/VAE/text encoders are replaced by a fixed tiny video, so only the CLI, validation and the
output writing run. With PAUSE=1 the MP4 writer, after its first frame reached ffmpeg, creates the
file MARKER and sleeps: the test then kills the process while the video is being written.
"""

import os
import sys
import time

import imageio_ffmpeg
import numpy as np

from stepvideo_jax import components
from stepvideo_jax.diffusion import pipeline
from stepvideo_jax.tools import sample

marker, pause = sys.argv[1], sys.argv[2] == "1"
_real_write_frames = imageio_ffmpeg.write_frames


def _paused_write_frames(*args, **kwargs):
    gen = _real_write_frames(*args, **kwargs)
    gen.send(None)
    frame = yield
    try:
        gen.send(frame)
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    finally:
        gen.close()


def _stub_call(self, settings, image):
    video = np.linspace(-1, 1, settings.frames * settings.height * settings.width * 3, dtype=np.float32)
    return pipeline.GenerationResult(video.reshape(settings.frames, settings.height, settings.width, 3), None, None, {})


if pause:
    imageio_ffmpeg.write_frames = _paused_write_frames
components.load_components = lambda config, mesh=None: (None, None, None)
pipeline.VideoPipeline.__init__ = lambda self, *a, **k: None
pipeline.VideoPipeline.__call__ = _stub_call
sys.argv = ["sample.py"] + sys.argv[3:]
sample.run_main()
