"""A Gradio web UI around one loaded pipeline.

    python -m stepvideo_jax.app --config=demo                       # http://127.0.0.1:7860
    python -m stepvideo_jax.app --config=ti2v --config.checkpoint_dir=checkpoints/stepvideo-ti2v --port=8080

Any sampling config works (`--config` as for sample.py; its fields are the defaults of the form): the
model is loaded and compiled once, generations run one at a time through Gradio's queue (others wait
with their place shown), each with a progress bar. A generation returns the MP4, its first | last frame
preview and the stage timings; files go to the config's `output_dir`. The server binds to 127.0.0.1
unless `--host` says otherwise. Needs the `app` extra (`pip install -e '.[app]'`).
"""

from __future__ import annotations

import os

from absl import app as absl_app
from absl import flags
from ml_collections import config_flags

from stepvideo_jax import configs
from stepvideo_jax.tools import cli

__all__ = ["build_app", "run_main"]

_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.config_path("demo"), "Sampling config: NAME[:VARIANT] (ti2v, t2v, demo) or FILE[:ARG]."
)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind (127.0.0.1 = this machine only).")
_PORT = flags.DEFINE_integer("port", 7860, "Port to serve on.")


def build_app(pipe, config):
    """The gr.Blocks page for a loaded `TI2VPipeline` / `TextToVideoPipeline` with `config`'s defaults."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    ti2v = bool(config.use_additional_conditions)
    output_dir = os.path.abspath(config.output_dir)

    def generate(image, prompt, motion_score, steps, cfg, seed, progress=gr.Progress(track_tqdm=True)):
        if ti2v and image is None:
            raise gr.Error("Upload a first frame (PNG/JPEG) first.")
        values = dict(prompt=prompt, steps=int(steps), cfg=float(cfg), seed=int(seed))
        if ti2v:
            values["motion_score"] = float(motion_score)
        try:
            out = pipe.generate(image if ti2v else None, **values)
        except ValueError as e:  # a bad value: shown to the user as one line
            raise gr.Error(str(e)) from None
        paths = out.save_in(output_dir)
        t = out.timings
        text = ", ".join(f"{k.removesuffix('_s')} {v:.2f}s" for k, v in t.items())
        return paths["mp4"], paths["png"], text

    title = "Step-Video-TI2V (JAX)" if ti2v else "Step-Video-T2V (JAX)"
    with gr.Blocks(title=title) as page:
        gr.Markdown(
            f"## {title}\nCheckpoint: `{config.checkpoint_dir if config.variant != 'tiny' else 'tiny'}`"
            f" · {config.frames} frames at {config.height}x{config.width}"
        )
        with gr.Row():
            with gr.Column():
                default_image = config.image if ti2v and os.path.isfile(config.image) else None
                image = gr.Image(
                    label="First frame",
                    type="numpy",
                    value=default_image,
                    visible=ti2v,
                    image_mode="RGB",
                    sources=["upload", "clipboard"],
                )
                prompt = gr.Textbox(label="Prompt", value=config.prompt, lines=2)
                motion = gr.Slider(
                    0, 20, value=float(config.motion_score), step=0.5, label="Motion score", visible=ti2v
                )
                with gr.Row():
                    steps = gr.Slider(1, 100, value=int(config.steps), step=1, label="Steps")
                    cfg = gr.Slider(0, 20, value=float(config.cfg), step=0.5, label="CFG (guidance scale)")
                seed = gr.Number(value=int(config.seed), precision=0, label="Seed")
                button = gr.Button("Generate", variant="primary")
            with gr.Column():
                video = gr.Video(label="Video", autoplay=True, loop=True)
                preview = gr.Image(label="First | last frame", type="filepath")
                timings = gr.Textbox(label="Timings", lines=2)
        button.click(
            generate,
            [image, prompt, motion, steps, cfg, seed],
            [video, preview, timings],
            api_name="generate",
            concurrency_limit=1,
        )
    page.queue(default_concurrency_limit=1)
    return page


def main(argv):
    if len(argv) > 1:
        raise absl_app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from stepvideo_jax import api

    config = _CONFIG.value
    try:
        pipe = api.pipeline_for(config)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    page = build_app(pipe, config)
    os.makedirs(config.output_dir, exist_ok=True)
    print(f"serving on http://{_HOST.value}:{_PORT.value}", flush=True)
    page.launch(
        server_name=_HOST.value,
        server_port=_PORT.value,
        allowed_paths=[os.path.abspath(config.output_dir)],
        show_api=True,
        quiet=True,
    )


def run_main() -> None:
    cli.run(main)
