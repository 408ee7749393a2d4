"""The Gradio web UI, driven through gradio_client as a browser would: upload an image, generate, get an
MP4 back (tiny random-weight models, 2 steps). The server binds to 127.0.0.1 only."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web UI needs the `app` extra (pip install -e '.[app]')")
gradio_client = pytest.importorskip("gradio_client")

from stepvideo_jax import video_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "stepvideo_jax.app",
        "--config=ti2v:tiny",
        "--config.frames=17",
        "--config.height=32",
        "--config.width=32",
        "--config.steps=2",
        f"--config.output_dir={tmp_path / 'out'}",
        f"--port={port}",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the app exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("the app did not start listening in 600 s")
        yield url, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_generate_through_the_web_api_returns_an_mp4(server):
    url, tmp_path = server
    image = np.zeros((48, 40, 3), np.uint8)
    image[10:30, 10:30] = (30, 200, 30)
    path = tmp_path / "first.png"
    Image.fromarray(image).save(path)
    client = gradio_client.Client(url, verbose=False)
    video, preview, timings = client.predict(
        gradio_client.handle_file(str(path)), "a green square", 5.0, 2, 4.0, 7, api_name="/generate"
    )
    mp4 = video["video"] if isinstance(video, dict) else video
    frames = video_io.read_mp4(mp4)
    assert frames.shape == (17, 32, 32, 3)
    assert np.asarray(Image.open(preview)).shape == (32, 64, 3)  # first | last frame side by side
    assert "denoise" in timings and "total" in timings
    written = sorted(os.listdir(tmp_path / "out"))
    assert written == ["a_green_square-seed7.mp4", "a_green_square-seed7.png"]
    with pytest.raises(Exception, match="seed must be an integer"):  # the pipeline's one-line error, shown
        client.predict(gradio_client.handle_file(str(path)), "x", 5.0, 2, 4.0, -1, api_name="/generate")
