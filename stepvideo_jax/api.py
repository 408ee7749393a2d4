"""The Python API: a loaded pipeline object that makes one video per call (diffusers-style).

    import stepvideo_jax
    pipe = stepvideo_jax.TI2VPipeline.from_config("demo")          # or .from_checkpoint("checkpoints/stepvideo-ti2v")
    out = pipe(image="cat.png", prompt="a cat turns its head", motion_score=5.0, seed=7)
    out.frames                                                     # uint8 [F, H, W, 3]
    out.save("outputs/cat.mp4")                                    # cat.mp4 + cat.png (first | last frame)
    print(out.timings)

The networks are loaded once, in the constructor; every call is validated exactly like `sample.py`
(`SampleSettings.from_config` on the config with that call's values) before any work, and calls
of the same sizes reuse the compiled programs (the sampler's jitted step, the VAE's and text
encoders' jitted functions are kept on the object). `TextToVideoPipeline` is the same without an
image or motion score.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from ml_collections import config_dict

from stepvideo_jax import components, configs, video_io
from stepvideo_jax.diffusion import pipeline as _pipeline
from stepvideo_jax.sharding import MeshConfig, make_mesh

__all__ = [
    "GenerationOutput",
    "TI2VPipeline",
    "TextToVideoPipeline",
    "DEMO_CHECKPOINT",
    "call_settings",
    "pipeline_for",
]

DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "checkpoint")

# Keyword arguments of a call -> config fields (the same names, validated the same way).
_CALL_FIELDS = (
    "prompt",
    "motion_score",
    "seed",
    "steps",
    "cfg",
    "frames",
    "height",
    "width",
    "time_shift",
    "positive_magic",
    "negative_magic",
    "fps",
)


@dataclasses.dataclass
class GenerationOutput:
    """One generated video: uint8 frames, the settings that made it and stage timings (seconds)."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    settings: _pipeline.SampleSettings
    timings: dict[str, float]
    latents: np.ndarray  # float32 [1, F', h, w, C] final latents

    def save(self, path: str | os.PathLike) -> dict[str, str]:
        """Writes `path` (MP4, H.264) and the same name with `.png` (first | last frame side by side),
        each through a temporary file renamed into place; returns {"mp4": ..., "png": ...}."""
        path = os.fspath(path)
        if not path.endswith(".mp4"):
            raise ValueError(f"output path must end with .mp4; got {path!r}")
        folder = os.path.dirname(os.path.abspath(path))
        video_io.check_output_dir(folder)
        os.makedirs(folder, exist_ok=True)
        png = path[: -len(".mp4")] + ".png"
        s = self.settings
        video_io.write_mp4(path, self.frames, fps=s.fps, denoise=s.denoise_filter)
        video_io.write_png(png, np.concatenate([self.frames[0], self.frames[-1]], axis=1))
        return {"mp4": path, "png": png}

    def save_in(self, folder: str | os.PathLike, name: str | None = None) -> dict[str, str]:
        """Writes `<name>.mp4` / `<name>.png` in `folder` (default name: prompt prefix + seed, as
        sample.py names them), appending `-2`, `-3`, ... rather than replacing an existing file."""
        stem = name or video_io.output_stem(self.settings.prompt, self.settings.seed)
        mp4, png = video_io.reserve_output_paths(os.fspath(folder), stem, [".mp4", ".png"])
        try:
            video_io.write_mp4(mp4, self.frames, fps=self.settings.fps, denoise=self.settings.denoise_filter)
            video_io.write_png(png, np.concatenate([self.frames[0], self.frames[-1]], axis=1))
        except BaseException:
            for path in (mp4, png):  # drop our still-empty placeholders, then re-raise
                if os.path.isfile(path) and os.path.getsize(path) == 0:
                    os.remove(path)
            raise
        return {"mp4": mp4, "png": png}


def _image_array(image: Any) -> np.ndarray:
    """A PIL image or a uint8 [H, W, 3] array -> float32 [H, W, 3] in [-1, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        shape = getattr(image, "shape", None)
        got = type(image).__name__ if shape is None else f"{getattr(image, 'dtype', '')} {tuple(shape)}"
        raise ValueError(f"image must be a file path, a PIL image or a uint8 [height, width, 3] array; got {got}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be non-empty; got shape {image.shape}")
    return image.astype(np.float32) / 127.5 - 1.0


def _load_config_file(path: str, arg: str) -> config_dict.ConfigDict:
    """`get_config(arg)` of a config file given by path (what `--config=FILE:ARG` loads)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_stepvideo_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def call_settings(config, image: Any = None, **values) -> tuple[_pipeline.SampleSettings, np.ndarray | None]:
    """`config` with one call's values, validated by `SampleSettings.from_config` (one-line ValueError
    naming the first problem); returns the settings and the prepared image (None for text-to-video).
    `image` is a path, a PIL image or a uint8 [H, W, 3] array; None values keep the config's."""
    config = config_dict.ConfigDict(config.to_dict())
    for key, value in values.items():
        if key not in _CALL_FIELDS:
            raise ValueError(f"unexpected argument {key!r}; expected image and some of {', '.join(_CALL_FIELDS)}")
        if value is not None:
            config[key] = value
    array = None
    if config.use_additional_conditions:
        if image is None:
            raise ValueError("image is required: a file path, a PIL image or a uint8 [height, width, 3] array")
        if isinstance(image, (str, os.PathLike)):
            config.image = os.fspath(image)
        else:
            array = _image_array(image)
            config.image = _pipeline.SYNTHETIC_IMAGE  # validated here; replaced by the array below
    elif image is not None:
        raise ValueError("text-to-video takes no image")
    settings = _pipeline.SampleSettings.from_config(config)
    if array is not None:
        settings = dataclasses.replace(settings, image="<array>")
        return settings, video_io.cover_resize_crop(array, settings.height, settings.width)
    return settings, _pipeline.prepare_image(settings)


class _Pipeline:
    """Loaded networks + a sampling config whose fields are each call's defaults."""

    _TI2V = True
    _DEFAULT_CONFIG = "ti2v"

    def __init__(self, config: config_dict.ConfigDict, mesh=None):
        if bool(config.use_additional_conditions) != self._TI2V:
            raise ValueError(
                f"{type(self).__name__} needs a config with use_additional_conditions={self._TI2V}; "
                f"got pipeline {config.pipeline!r}"
            )
        self.config = config_dict.ConfigDict(config.to_dict())
        if isinstance(mesh, str):
            mesh = make_mesh(MeshConfig.parse(mesh)) if mesh else None
        elif mesh is None and config.mesh:
            mesh = make_mesh(MeshConfig.parse(config.mesh))
        self.mesh = mesh
        t0 = time.perf_counter()
        if config.variant != "tiny":
            components.check_checkpoint_dir(config.checkpoint_dir)
        dit, vae, prompt_encoder = components.load_components(self.config, mesh)
        self.load_seconds = time.perf_counter() - t0
        self.video_pipeline = _pipeline.VideoPipeline(
            dit, vae, prompt_encoder, mesh=mesh, vocabulary_warning=bool(config.get("vocabulary_warning", False))
        )

    # ------------------------------------------------------------------------------ constructors
    @classmethod
    def from_config(cls, config: str | config_dict.ConfigDict = "", *, mesh=None, **overrides) -> _Pipeline:
        """From a packaged config name (`"demo"`, `"ti2v:tiny"`), a config file path or a ConfigDict;
        `overrides` replace config fields (e.g. `steps=20`, `checkpoint_dir=...`)."""
        if isinstance(config, str):
            name = config or cls._DEFAULT_CONFIG
            path, _, arg = name.partition(":")
            if os.path.isfile(path):
                config = _load_config_file(path, arg)
            else:
                config = configs.get_config(name)
        config = config_dict.ConfigDict(config.to_dict())
        for key, value in overrides.items():
            if key not in config:
                near = configs.nearest_names(key, config)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise ValueError(f"unknown config field {key!r}{hint}")
            config[key] = value
        return cls(config, mesh=mesh)

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike, *, mesh=None, **overrides) -> _Pipeline:
        """From any checkpoint folder the component registry reads (converted release, the demo
        model, or a trained model exported by `stepvideo_jax.tools.export`). The packaged demo
        folder takes the demo config's defaults, any other folder the release config's."""
        checkpoint_dir = os.fspath(checkpoint_dir)
        components.check_checkpoint_dir(checkpoint_dir)
        is_demo = os.path.abspath(checkpoint_dir) == DEMO_CHECKPOINT
        base = "demo" if is_demo else cls._DEFAULT_CONFIG
        return cls.from_config(base, mesh=mesh, **{"checkpoint_dir": checkpoint_dir, **overrides})

    # ------------------------------------------------------------------------------------- calls
    def settings(self, image: Any = None, **values) -> tuple[_pipeline.SampleSettings, np.ndarray | None]:
        """Validates one call's values against the config (as sample.py does); returns the settings
        and the prepared image (float32 [H, W, 3] in [-1, 1], or None for text-to-video)."""
        return call_settings(self.config, image, **values)

    def generate(self, image: Any, **values) -> GenerationOutput:
        """One video: `image` (None for text-to-video) and call values by config field name."""
        t0 = time.perf_counter()
        job = self.settings(image, **values)
        (out,) = self.generate_all([job])
        out.timings["total_s"] = time.perf_counter() - t0  # validation and image reading included
        return out

    def generate_all(
        self,
        jobs: Iterable[tuple[_pipeline.SampleSettings, np.ndarray | None]],
        *,
        total: int | None = None,
        progress: bool = False,
    ) -> Iterator[GenerationOutput]:
        """Videos of already validated jobs (`settings(...)` results; a lazy iterable is fine), in
        order, through `diffusion.pipeline.generate_videos`: the loop batch generation and the
        evaluation runner share."""
        for video in _pipeline.generate_videos(
            self.video_pipeline, jobs, mesh=self.mesh, total=total, progress=progress
        ):
            yield GenerationOutput(
                frames=video.frames, settings=video.settings, timings=video.timings, latents=video.result.latents
            )


class TI2VPipeline(_Pipeline):
    """Text + first image -> video (Step-Video-TI2V)."""

    _TI2V = True
    _DEFAULT_CONFIG = "ti2v"

    def __call__(
        self,
        image: Any = None,
        prompt: str | None = None,
        *,
        motion_score: float | None = None,
        seed: int | None = None,
        steps: int | None = None,
        cfg: float | None = None,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        **more,
    ) -> GenerationOutput:
        """image: a file path, a PIL image or a uint8 [H, W, 3] array (resized to cover and centre-
        cropped); every other value defaults to the pipeline's config. More config fields by name:
        time_shift, positive_magic, negative_magic, fps."""
        return self.generate(
            image,
            prompt=prompt,
            motion_score=motion_score,
            seed=seed,
            steps=steps,
            cfg=cfg,
            frames=frames,
            height=height,
            width=width,
            **more,
        )


class TextToVideoPipeline(_Pipeline):
    """Text -> video (Step-Video-T2V)."""

    _TI2V = False
    _DEFAULT_CONFIG = "t2v"

    def __call__(
        self,
        prompt: str | None = None,
        *,
        seed: int | None = None,
        steps: int | None = None,
        cfg: float | None = None,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        **more,
    ) -> GenerationOutput:
        return self.generate(
            None, prompt=prompt, seed=seed, steps=steps, cfg=cfg, frames=frames, height=height, width=width, **more
        )


def pipeline_for(config: config_dict.ConfigDict, mesh=None) -> _Pipeline:
    """The pipeline class the config asks for (TI2V or text-to-video), loaded."""
    cls = TI2VPipeline if config.use_additional_conditions else TextToVideoPipeline
    return cls(config, mesh=mesh)
