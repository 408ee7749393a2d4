"""The text(-image)-to-video pipeline: prompts + first image -> latents -> video files.

    settings = SampleSettings.from_config(config)     # validates everything; nothing is written
    dit, vae, prompt_encoder = components.load_components(config, mesh)
    result = VideoPipeline(dit, vae, prompt_encoder)(settings, image)
    paths = save_video(result.video, settings)

`run(config)` does all four (what `sample.py` calls). `generate_videos(pipeline, jobs)` is the one
loop that makes many videos with a loaded pipeline: the Python API (one call = one job), batch
generation (`sample.py --config.prompts=FILE.jsonl`) and the evaluation tool's benchmark runner all
generate through it. As released: the conditional prompt is
prompt + positive magic, the unconditional one the negative magic; the first image is mapped to
[-1, 1], resized to cover the target size and centre-cropped, VAE-encoded (posterior sample) to one
latent frame and zero-padded to the latent frame count; initial latents are N(0, 1) from the seed;
sampling is CFG + Euler on the shifted flow-matching sigmas; the decoded video is clamped, turned to
uint8 and written as H.264 at 25 fps, plus a PNG of the first and last frames side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from stepvideo_jax import components, video_io
from stepvideo_jax.diffusion.cache import CacheSettings, check_guidance_interval
from stepvideo_jax.diffusion.flow_match import flow_sigmas
from stepvideo_jax.diffusion.sampler import Sampler, TextConditioning
from stepvideo_jax.distributed import is_main_process
from stepvideo_jax.sharding import MeshConfig, make_mesh, use_mesh
from stepvideo_jax.text.tokenizers import words_outside
from stepvideo_jax.vae import sharded_vae_decode

__all__ = [
    "SampleSettings",
    "VideoPipeline",
    "GenerationResult",
    "GeneratedVideo",
    "generate_videos",
    "latent_grid",
    "prepare_image",
    "save_video",
    "run",
]

FRAMES_PER_CHUNK = 17  # video frames per VAE chunk
LATENTS_PER_CHUNK = 3  # latent frames per VAE chunk
SPATIAL_FACTOR = 16  # VAE spatial compression
SYNTHETIC_IMAGE = "synthetic"  # `image` value selecting the built-in test pattern
_EXTREME_MOTION = 100.0  # requested motion scores above this get a warning (the release's examples use 2-10)


def latent_grid(frames: int, height: int, width: int, vae_cfg=None) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) for a video size; sizes are rounded down as
    released (frames to a multiple of 17 -> 3 latent frames each, height/width to multiples of 16),
    or by `vae_cfg`'s chunk and spatial factor when given (a VAE with other levels, e.g. the demo's)."""
    if vae_cfg is None:
        return frames // FRAMES_PER_CHUNK * LATENTS_PER_CHUNK, height // SPATIAL_FACTOR, width // SPATIAL_FACTOR
    s = vae_cfg.spatial_factor
    return frames // vae_cfg.frame_len * vae_cfg.latent_len, height // s, width // s


# ------------------------------------------------------------------------------------------ settings
def _number(config, name: str) -> float:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


def _integer(config, name: str, minimum: int) -> int:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Validated sampling settings (sizes already rounded down as released)."""

    ti2v: bool
    prompt: str
    positive_magic: str
    negative_magic: str
    image: str  # path, "synthetic", or "" (text-to-video)
    frames: int
    height: int
    width: int
    steps: int
    cfg: float
    time_shift: float
    motion_score: float | None
    seed: int
    output_dir: str
    fps: int
    denoise_filter: bool
    crop_540p: bool
    fused_loop: bool
    progress: bool
    cache: CacheSettings = CacheSettings()  # step caching (`cache` sub-config; policy none = off)
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # step fractions [lo, hi) where CFG applies
    max_image_pixels: int = video_io.MAX_IMAGE_PIXELS

    @classmethod
    def from_config(cls, config) -> SampleSettings:
        """Checks every field (and the image file, the output folder and the checkpoint folder) and
        raises a one-line ValueError naming the first problem; creates nothing."""
        ti2v = bool(config.use_additional_conditions)
        for name in ("prompt", "positive_magic", "negative_magic", "image", "output_dir"):
            if not isinstance(config[name], str):
                raise ValueError(f"{name} must be a string; got {config[name]!r}")
        for name in ("prompt", "positive_magic", "negative_magic"):
            try:  # bytes that are not UTF-8 arrive from the command line as lone surrogates
                config[name].encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(
                    f"{name} is not valid UTF-8 text (bad bytes at position {e.start}); pass the text in UTF-8"
                ) from None
        frames = _integer(config, "frames", FRAMES_PER_CHUNK)
        height = _integer(config, "height", SPATIAL_FACTOR)
        width = _integer(config, "width", SPATIAL_FACTOR)
        steps = _integer(config, "steps", 1)
        seed = _integer(config, "seed", 0)
        if seed >= 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32); got {seed}")
        fps = _integer(config, "fps", 1)
        cfg = _number(config, "cfg")
        if not math.isfinite(cfg) or cfg < 0:
            raise ValueError(f"cfg (guidance scale) must be a finite number >= 0; got {config.cfg!r}")
        time_shift = _number(config, "time_shift")
        if not math.isfinite(time_shift) or time_shift <= 0:
            raise ValueError(f"time_shift must be a finite number > 0; got {config.time_shift!r}")
        motion = None
        max_pixels = _integer(config, "max_image_pixels", 1) if "max_image_pixels" in config else None
        max_pixels = max_pixels or video_io.MAX_IMAGE_PIXELS
        if ti2v:
            motion = _number(config, "motion_score")
            if not math.isfinite(motion) or motion < 0:
                raise ValueError(f"motion_score must be a finite number >= 0; got {config.motion_score!r}")
            if motion > _EXTREME_MOTION:
                logging.warning(
                    "motion_score %g is far above the trained range (about 0-%g); expect broken motion",
                    motion,
                    _EXTREME_MOTION,
                )
            if not config.image:
                raise ValueError("image is required for text-image-to-video: set --config.image=PATH (PNG/JPEG)")
            if config.image != SYNTHETIC_IMAGE:
                video_io.read_image(config.image, max_pixels)  # raises if missing, unreadable or too large
        elif config.image:
            raise ValueError(f"this text-to-video config takes no image; got image={config.image!r}")
        cache = CacheSettings.from_config(config.get("cache"))
        guidance_interval = check_guidance_interval(config.get("guidance_interval", (0.0, 1.0)))
        video_io.check_output_dir(config.output_dir)
        if config.variant != "tiny":
            components.check_checkpoint_dir(config.checkpoint_dir)
        return cls(
            ti2v=ti2v,
            prompt=config.prompt,
            positive_magic=config.positive_magic,
            negative_magic=config.negative_magic,
            image=config.image,
            frames=frames // FRAMES_PER_CHUNK * FRAMES_PER_CHUNK,
            height=height // SPATIAL_FACTOR * SPATIAL_FACTOR,
            width=width // SPATIAL_FACTOR * SPATIAL_FACTOR,
            steps=steps,
            cfg=cfg,
            time_shift=time_shift,
            motion_score=motion,
            seed=seed,
            output_dir=config.output_dir,
            fps=fps,
            denoise_filter=bool(config.denoise_filter),
            crop_540p=bool(config.crop_540p),
            fused_loop=bool(config.fused_loop),
            progress=bool(config.progress),
            cache=cache,
            guidance_interval=guidance_interval,
            max_image_pixels=max_pixels,
        )


def prepare_image(settings: SampleSettings) -> np.ndarray | None:
    """The first image as float32 [H, W, 3] in [-1, 1] at the target size (None for text-to-video)."""
    if not settings.ti2v:
        return None
    if settings.image == SYNTHETIC_IMAGE:
        return video_io.synthetic_image(settings.height, settings.width)
    return video_io.cover_resize_crop(
        video_io.read_image(settings.image, settings.max_image_pixels), settings.height, settings.width
    )


def _mesh(config):
    return make_mesh(MeshConfig.parse(config.mesh)) if config.mesh else None


# ------------------------------------------------------------------------------------------ pipeline
@dataclasses.dataclass
class GenerationResult:
    video: np.ndarray  # float32 [F, H, W, 3] in [-1, 1] (clamped)
    latents: np.ndarray  # float32 [1, F', h, w, C] final latents (channels-last)
    condition: np.ndarray | None  # float32 [1, F', h, w, C] image condition (TI2V)
    timings: dict[str, float]


class VideoPipeline:
    """Runs the DiT sampler between the text encoders and the VAE (one video per call).

    `VideoPipeline(dit, vae, prompt_encoder)` keeps all three resident (compiled programs are reused
    across calls); `VideoPipeline.sequential(loaders)` holds one component at a time: each stage (text
    encoding, image encoding, denoising, decoding) loads its component with `loaders` (from
    `components.component_loaders`) and frees it after, so the peak is the largest stage, not the sum.
    Both compute the same video bit for bit."""

    def __init__(self, dit, vae, prompt_encoder, mesh=None, *, vocabulary_warning: bool = False):
        self.dit, self.vae, self.prompt_encoder = dit, vae, prompt_encoder
        self.mesh = mesh  # when set, the VAE decode spreads its latent chunks over the devices
        self.vocabulary_warning = vocabulary_warning
        self.sampler = Sampler(dit)
        self.ti2v = bool(dit.cfg.use_additional_conditions)
        self._loaders = None

    @classmethod
    def sequential(cls, loaders: dict, mesh=None, *, vocabulary_warning: bool = False) -> VideoPipeline:
        """One component resident at a time; `loaders` = {"text", "vae", "dit": () -> component}."""
        self = cls.__new__(cls)
        self.dit = self.vae = self.prompt_encoder = self.sampler = None
        self.mesh, self.ti2v, self._loaders = mesh, None, dict(loaders)
        self.vocabulary_warning = vocabulary_warning
        return self

    @contextlib.contextmanager
    def _resident(self, attr: str):
        """The component `attr` for one stage: the held one, or (sequential) loaded now, freed after."""
        if self._loaders is None:
            yield getattr(self, attr)
            return
        setattr(self, attr, self._loaders[_LOADER_NAMES[attr]]())
        try:
            yield getattr(self, attr)
        finally:
            setattr(self, attr, None)
            gc.collect()  # the component's arrays go now, before the next stage loads its own

    def encode_text(self, prompt: str, positive_magic: str, negative_magic: str) -> TextConditioning:
        """One CFG batch: row 0 = prompt + positive magic, row 1 = negative magic."""
        llm_states, mask, clip_states = self.prompt_encoder.encode_prompts([prompt + positive_magic, negative_magic])
        return TextConditioning(jnp.asarray(llm_states), jnp.asarray(mask), jnp.asarray(clip_states))

    def encode_image(self, image: np.ndarray, latent_frames: int, rng: jax.Array) -> jax.Array:
        """[H, W, 3] in [-1, 1] -> condition latents [1, F', h, w, C]: the image's one latent frame
        (a posterior sample, as released) followed by zeros."""
        video = jnp.asarray(image, jnp.float32).transpose(2, 0, 1)[None, None]  # [1, 1, 3, H, W]
        z = self.vae.encode(video, rng=rng)  # [1, 1, C, h, w]
        z = jnp.transpose(z, (0, 1, 3, 4, 2)).astype(jnp.float32)  # [1, 1, h, w, C]
        pad = jnp.zeros((1, latent_frames - z.shape[1]) + z.shape[2:], jnp.float32)
        return jnp.concatenate([z, pad], axis=1)

    def _check_task(self, settings: SampleSettings, ti2v: bool) -> None:
        if settings.ti2v != ti2v:
            raise ValueError(
                f"settings are for {'TI2V' if settings.ti2v else 'T2V'} but the DiT has use_additional_conditions={ti2v}"
            )

    def __call__(self, settings: SampleSettings, image: np.ndarray | None) -> GenerationResult:
        if self.ti2v is not None:
            self._check_task(settings, self.ti2v)
        if settings.ti2v and (image is None or image.shape != (settings.height, settings.width, 3)):
            raise ValueError(
                f"image must be [{settings.height}, {settings.width}, 3] in [-1, 1] (see prepare_image); "
                f"got {None if image is None else image.shape}"
            )
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        noise_key, posterior_key = jax.random.split(jax.random.key(settings.seed))
        with self._resident("prompt_encoder") as encoder:
            if self.vocabulary_warning:
                _warn_outside_vocabulary(settings.prompt, encoder)
            text = self.encode_text(settings.prompt, settings.positive_magic, settings.negative_magic)
            jax.block_until_ready(text)
        lap("text_encode_s")
        condition = None
        with self._resident("vae") as vae:
            f, h, w = latent_grid(settings.frames, settings.height, settings.width, vae.cfg)
            if settings.ti2v:
                condition = jax.block_until_ready(self.encode_image(image, f, posterior_key))
        if settings.ti2v:
            lap("image_encode_s")
        with self._resident("dit") as dit:
            self._check_task(settings, bool(dit.cfg.use_additional_conditions))
            sampler = self.sampler if self._loaders is None else Sampler(dit)
            # Drawn in the release's layout (b, f, c, h, w) so a seed means the same noise either way.
            noise = jax.random.normal(noise_key, (1, f, dit.cfg.in_channels, h, w), jnp.float32)
            latents = jnp.transpose(noise, (0, 1, 3, 4, 2))  # [1, F', h, w, C]
            sigmas = flow_sigmas(settings.steps, settings.time_shift)
            latents = sampler.sample(
                latents,
                sigmas,
                text,
                condition,
                settings.motion_score,
                settings.cfg,
                fused=settings.fused_loop,
                progress=settings.progress,
                cache=settings.cache,
                guidance_interval=settings.guidance_interval,
            )
            jax.block_until_ready(latents)
            timings["dit_evals"] = sampler.dit_evals  # batch rows x steps computed by the full block stack
            del sampler
        lap("denoise_s")
        with self._resident("vae") as vae:
            if self.mesh is None:
                video = vae.decode_channels_last(latents)  # [1, F, H, W, 3]
            else:
                video = sharded_vae_decode(vae, latents, self.mesh)  # [1, F, H, W, 3], chunks over devices
            video = np.clip(_to_host(video)[0].astype(np.float32), -1.0, 1.0)  # [F, H, W, 3]
        lap("decode_s")
        return GenerationResult(
            video=video,
            latents=_to_host(latents),
            condition=None if condition is None else _to_host(condition),
            timings=timings,
        )


def _warn_outside_vocabulary(prompt: str, encoder) -> None:
    """One warning line naming the prompt's words that the text tokenizer has no whole word for."""
    words = words_outside(prompt, encoder.clip_tokenizer.whole_words())
    if words:
        logging.warning(
            "prompt words outside this model's vocabulary (it never saw them; they will be ignored or "
            "distort the video): %s",
            ", ".join(words),
        )


# The pipeline's attribute -> its `components.component_loaders` key.
_LOADER_NAMES = {"prompt_encoder": "text", "vae": "vae", "dit": "dit"}


@dataclasses.dataclass
class GeneratedVideo:
    """One video of `generate_videos`: uint8 frames (540p-cropped when the settings ask), its job
    (settings, prepared image), the pipeline's result and stage timings (seconds, `total_s` from the
    job's start)."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    settings: SampleSettings
    image: np.ndarray | None  # float32 [H, W, 3] in [-1, 1], the prepared first image (None: T2V)
    result: GenerationResult
    timings: dict[str, float]


def generate_videos(
    pipeline: VideoPipeline,
    jobs: Iterable[tuple[SampleSettings, np.ndarray | None]],
    *,
    mesh=None,
    total: int | None = None,
    progress: bool = False,
    desc: str = "videos",
) -> Iterator[GeneratedVideo]:
    """Generates each (validated settings, prepared image) job in turn with one loaded pipeline, under
    the mesh's rules, yielding each video as it is done (jobs may be a lazy iterable, so images are
    read one at a time); a bar over the videos when `progress`."""
    with tqdm(total=total, desc=desc, unit="video", disable=not progress) as bar:
        for settings, image in jobs:
            t0 = time.perf_counter()
            with use_mesh(mesh):
                result = pipeline(settings, image)
            frames = video_io.to_uint8(result.video)  # [F, H, W, 3]
            if settings.crop_540p:
                frames = video_io.crop_standard_540p(frames)
            timings = {**result.timings, "total_s": time.perf_counter() - t0}
            bar.update(1)
            yield GeneratedVideo(frames=frames, settings=settings, image=image, result=result, timings=timings)


# ------------------------------------------------------------------------------------------- output
def save_video(video: np.ndarray, settings: SampleSettings) -> dict[str, str]:
    """Writes `<stem>.mp4` and `<stem>.png` (first | last frame) under the output folder, where the
    stem is the sanitised prompt prefix + seed (`-2`, `-3`, ... appended rather than overwrite)."""
    frames = video_io.to_uint8(video)  # [F, H, W, 3]
    if settings.crop_540p:
        frames = video_io.crop_standard_540p(frames)
    stem = video_io.output_stem(settings.prompt, settings.seed)
    out_dir = video_io.check_writable_dir(settings.output_dir)
    video_io.remove_stale_temp_files(out_dir)
    # Both files are written completely under hidden per-process names first; the final names are
    # claimed only then and filled by a rename at once, so a kill never leaves an empty or partial
    # file under a final name (a killed run's hidden files are removed by the next run).
    parts = [video_io.private_path(out_dir, stem, s) for s in (".mp4", ".png")]
    finals: list[str] = []
    try:
        video_io.write_mp4(parts[0], frames, fps=settings.fps, denoise=settings.denoise_filter)
        video_io.write_png(parts[1], np.concatenate([frames[0], frames[-1]], axis=1))
        finals = video_io.reserve_output_paths(out_dir, stem, [".mp4", ".png"])
        for part, final in zip(parts, finals):
            os.replace(part, final)
    except BaseException:
        for path in finals:  # drop our still-empty placeholders, then re-raise
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                os.remove(path)
        for path in parts:
            if os.path.exists(path):
                os.remove(path)
        raise
    mp4, png = finals
    return {"mp4": mp4, "png": png}


def _to_host(x: jax.Array) -> np.ndarray:
    """The whole array on this host; on a multi-host mesh, gathered from every process first."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def run(config) -> dict[str, Any]:
    """Validates the config, loads the models, generates one video and writes it; returns the
    written paths, the settings and stage timings."""
    t0 = time.perf_counter()
    settings = SampleSettings.from_config(config)
    components.check_memory_options(config)
    if is_main_process():  # an unwritable output folder is found now, not after the generation
        video_io.check_writable_dir(settings.output_dir)
    image = prepare_image(settings)
    mesh = _mesh(config)
    vocab = bool(config.get("vocabulary_warning", False))
    if config.get("residency", "all") == "sequential":  # each stage loads its component (timed in its stage)
        pipeline = VideoPipeline.sequential(
            components.component_loaders(config, mesh), mesh=mesh, vocabulary_warning=vocab
        )
    else:
        pipeline = VideoPipeline(*components.load_components(config, mesh), mesh=mesh, vocabulary_warning=vocab)
    t_load = time.perf_counter() - t0
    with use_mesh(mesh):  # each network enters its own sharding rules
        result = pipeline(settings, image)
    t1 = time.perf_counter()
    # Every process computes; only process 0 writes the video.
    paths = save_video(result.video, settings) if is_main_process() else {}
    timings = {"load_s": t_load, **result.timings, "write_s": time.perf_counter() - t1}
    timings["total_s"] = time.perf_counter() - t0
    return {"paths": paths, "settings": settings, "timings": timings, "result": result}
