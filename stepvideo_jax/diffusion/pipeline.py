"""The text(-image)-to-video pipeline: prompts + first image -> latents -> video files.

    settings = SampleSettings.from_config(config)     # validates everything; nothing is written
    dit, vae, prompt_encoder = load_components(config)
    result = VideoPipeline(dit, vae, prompt_encoder)(settings, image)
    paths = save_video(result.video, settings)

`run(config)` does all four (what `sample.py` calls). As released: the conditional prompt is
prompt + positive magic, the unconditional one the negative magic; the first image is mapped to
[-1, 1], resized to cover the target size and centre-cropped, VAE-encoded (posterior sample) to one
latent frame and zero-padded to the latent frame count; initial latents are N(0, 1) from the seed;
sampling is CFG + Euler on the shifted flow-matching sigmas; the decoded video is clamped, turned to
uint8 and written as H.264 at 25 fps, plus a PNG of the first and last frames side by side.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stepvideo_jax import video_io
from stepvideo_jax.distributed import is_main_process
from stepvideo_jax.diffusion.flow_match import flow_sigmas
from stepvideo_jax.diffusion.sampler import Sampler, TextConditioning

__all__ = [
    "SampleSettings",
    "VideoPipeline",
    "GenerationResult",
    "load_components",
    "random_model",
    "latent_grid",
    "prepare_image",
    "save_video",
    "run",
    "CONVERTER_HINT",
]

FRAMES_PER_CHUNK = 17  # video frames per VAE chunk
LATENTS_PER_CHUNK = 3  # latent frames per VAE chunk
SPATIAL_FACTOR = 16  # VAE spatial compression
SYNTHETIC_IMAGE = "synthetic"  # `image` value selecting the built-in test pattern
CONVERTER_HINT = "python convert_torch_weights.py --src=/path/to/stepvideo-ti2v --dst={dst}"


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


def _check_checkpoint_dir(path: str) -> None:
    if not path or not os.path.isdir(path):
        raise ValueError(
            f"checkpoint folder {path!r} does not exist; convert the released weights first: "
            + CONVERTER_HINT.format(dst=path or "checkpoints/stepvideo-ti2v")
        )


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

    @classmethod
    def from_config(cls, config) -> "SampleSettings":
        """Checks every field (and the image file, the output folder and the checkpoint folder) and
        raises a one-line ValueError naming the first problem; creates nothing."""
        ti2v = bool(config.use_additional_conditions)
        for name in ("prompt", "positive_magic", "negative_magic", "image", "output_dir"):
            if not isinstance(config[name], str):
                raise ValueError(f"{name} must be a string; got {config[name]!r}")
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
        if ti2v:
            motion = _number(config, "motion_score")
            if not math.isfinite(motion) or motion < 0:
                raise ValueError(f"motion_score must be a finite number >= 0; got {config.motion_score!r}")
            if not config.image:
                raise ValueError("image is required for text-image-to-video: set --config.image=PATH (PNG/JPEG)")
            if config.image != SYNTHETIC_IMAGE:
                video_io.read_image(config.image)  # raises if missing or unreadable
        elif config.image:
            raise ValueError(f"this text-to-video config takes no image; got image={config.image!r}")
        video_io.check_output_dir(config.output_dir)
        if config.variant != "tiny":
            _check_checkpoint_dir(config.checkpoint_dir)
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
        )


def prepare_image(settings: SampleSettings) -> np.ndarray | None:
    """The first image as float32 [H, W, 3] in [-1, 1] at the target size (None for text-to-video)."""
    if not settings.ti2v:
        return None
    if settings.image == SYNTHETIC_IMAGE:
        return video_io.synthetic_image(settings.height, settings.width)
    return video_io.cover_resize_crop(video_io.read_image(settings.image), settings.height, settings.width)


# ---------------------------------------------------------------------------------------- components
def _mesh(config):
    if not config.mesh:
        return None
    from stepvideo_jax.sharding import MeshConfig, make_mesh

    return make_mesh(MeshConfig.parse(config.mesh))


def _tiny_cache_dir(config) -> str:
    if config.tokenizer_cache_dir:
        return config.tokenizer_cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stepvideo_jax", "tiny_tokenizers")


def random_model(make_model, seed: int):
    """`make_model()` with random parameters drawn on the host with NumPy, by name: biases 0, norm
    scales 1, embeddings N(0, 0.02), other weights N(0, 1/fan_in) (fan_in: every axis but the last and
    the stacked-layers axis). Building tiny models this way takes milliseconds, where running their
    initialisers op by op (or compiling them) takes tens of seconds on a CPU."""
    from flax import nnx

    graphdef, state = nnx.split(nnx.eval_shape(make_model))
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(state):
        if not isinstance(var, nnx.Param):
            raise ValueError(f"tiny model has non-parameter state at {'.'.join(map(str, path))}")
        name, shape, dtype = str(path[-1]), tuple(var.shape), var.dtype
        if "bias" in name:
            value = np.zeros(shape, np.float32)
        elif "norm" in name or name == "scale" or name.endswith("_scale"):
            value = np.ones(shape, np.float32)
        elif name == "embedding":
            value = rng.normal(0.0, 0.02, shape)
        else:
            axes = var.get_metadata().get("out_sharding") or (None,) * len(shape)
            dims = [d for d, a in zip(shape, axes) if a != "layers"]
            fan_in = int(np.prod(dims[:-1])) if len(dims) > 1 else dims[-1]
            value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
        var.set_value(jnp.asarray(value, dtype))
    return nnx.merge(graphdef, state)


def _tiny_components(config, mesh):
    """Random-weight tiny DiT, VAE and text encoders (tokenizers built into a cache folder)."""
    from flax import nnx

    from stepvideo_jax.dit import DiTConfig, StepVideoDiT
    from stepvideo_jax.text import ClipTokenizer, HunyuanCLIP, PromptEncoder, StepLLM, StepTokenizer
    from stepvideo_jax.text.tiny import build_tiny_tokenizers, tiny_clip_config, tiny_step_llm_config
    from stepvideo_jax.vae import VAEConfig, VideoVAE

    t = config.tiny
    seed = int(t.seed)
    pdt = config.param_dtype or "float32"
    llm_cfg = tiny_step_llm_config(param_dtype=pdt, dtype=config.text_dtype)
    clip_cfg = tiny_clip_config(param_dtype=pdt, dtype=config.text_dtype)
    spm_file, clip_vocab_dir = build_tiny_tokenizers(_tiny_cache_dir(config))
    step_tok = StepTokenizer(spm_file, max_length=llm_cfg.max_length)
    clip_tok = ClipTokenizer(clip_vocab_dir, max_length=clip_cfg.max_length)
    if step_tok.vocab_size > llm_cfg.vocab_size or clip_tok.vocab_size > clip_cfg.vocab_size:
        raise ValueError(
            f"tiny tokenizer vocabs ({step_tok.vocab_size}, {clip_tok.vocab_size}) exceed the tiny encoders' "
            f"({llm_cfg.vocab_size}, {clip_cfg.vocab_size})"
        )
    llm = random_model(lambda: StepLLM(llm_cfg, rngs=nnx.Rngs(0)), seed)
    clip = random_model(lambda: HunyuanCLIP(clip_cfg, rngs=nnx.Rngs(0)), seed + 1)
    encoder = PromptEncoder(llm, step_tok, clip, clip_tok, fingerprint=f"tiny-random-seed{seed}")
    vae_cfg = VAEConfig.tiny(
        z_channels=t.z_channels,
        encoder_ch=t.vae_width,
        decoder_ch=t.vae_width,
        norm_groups=t.vae_norm_groups,
        param_dtype=pdt,
        dtype=config.vae_dtype,
    )
    vae = random_model(lambda: VideoVAE(vae_cfg, rngs=nnx.Rngs(0)), seed + 2)
    frame_ch = t.dit_head_dim // 4 * 2  # RoPE channels: half (rounded to even) on frames, the rest on height/width
    hw_ch = (t.dit_head_dim - frame_ch) // 2
    dit_cfg = DiTConfig(
        num_heads=t.dit_heads,
        head_dim=t.dit_head_dim,
        in_channels=t.z_channels,
        out_channels=t.z_channels,
        num_layers=t.dit_layers,
        use_additional_conditions=bool(config.use_additional_conditions),
        caption_channels=(llm_cfg.hidden_size, clip_cfg.hidden_size),
        rope_split=(frame_ch, hw_ch, hw_ch),
        param_dtype=pdt,
        dtype=config.dit_dtype,
        attention_kernel=config.attention_kernel,
    )
    dit = random_model(lambda: StepVideoDiT(dit_cfg, rngs=nnx.Rngs(0)), seed + 3)
    if mesh is not None:
        from stepvideo_jax.sharding import DIT_RULES, model_shardings

        graphdef, state = nnx.split(dit)
        dit = nnx.merge(graphdef, jax.device_put(state, model_shardings(state, mesh, DIT_RULES)))
    return dit, vae, encoder


def _released_components(config, mesh):
    from stepvideo_jax.checkpoint import component_config, restore_component, tokenizer_dir
    from stepvideo_jax.text import ClipTokenizer, PromptEncoder, StepTokenizer

    ckpt = config.checkpoint_dir
    _check_checkpoint_dir(ckpt)
    param_dtype = config.param_dtype or None

    def restore(name: str, **runtime):
        cfg = dataclasses.replace(component_config(ckpt, name), **runtime)
        return restore_component(ckpt, name, mesh=mesh, config=cfg, dtype=param_dtype)

    from stepvideo_jax.diffusion.residency import quantize_override

    dit = restore("transformer", dtype=config.dit_dtype, attention_kernel=config.attention_kernel,
                  **quantize_override(config, "dit_quantize"))
    if bool(dit.cfg.use_additional_conditions) != bool(config.use_additional_conditions):
        raise ValueError(
            f"{ckpt}: the converted transformer has use_additional_conditions={dit.cfg.use_additional_conditions}, "
            f"but this config (task {config.task!r}) needs {bool(config.use_additional_conditions)}"
        )
    vae = restore("vae", dtype=config.vae_dtype)
    step_llm = restore("step_llm", dtype=config.text_dtype, **quantize_override(config, "text_quantize"))
    clip = restore("hunyuan_clip", dtype=config.text_dtype)
    step_tok = StepTokenizer(os.path.join(tokenizer_dir(ckpt, "step_llm"), "step1_chat_tokenizer.model"),
                             max_length=step_llm.cfg.max_length)
    clip_tok = ClipTokenizer(tokenizer_dir(ckpt, "hunyuan_clip"), max_length=clip.cfg.max_length)
    return dit, vae, PromptEncoder(step_llm, step_tok, clip, clip_tok)


def load_components(config):
    """(dit, vae, prompt_encoder) for a sampling config: random-weight tiny models for the `tiny`
    variant, else the converted checkpoints under `config.checkpoint_dir`."""
    mesh = _mesh(config)
    if config.variant == "tiny":
        return _tiny_components(config, mesh)
    return _released_components(config, mesh)


# ------------------------------------------------------------------------------------------ pipeline
@dataclasses.dataclass
class GenerationResult:
    video: np.ndarray  # float32 [F, H, W, 3] in [-1, 1] (clamped)
    latents: np.ndarray  # float32 [1, F', h, w, C] final latents (channels-last)
    condition: np.ndarray | None  # float32 [1, F', h, w, C] image condition (TI2V)
    timings: dict[str, float]


class VideoPipeline:
    """Runs the DiT sampler between the text encoders and the VAE (one video per call)."""

    def __init__(self, dit, vae, prompt_encoder, mesh=None):
        self.dit, self.vae, self.prompt_encoder = dit, vae, prompt_encoder
        self.mesh = mesh  # when set, the VAE decode spreads its latent chunks over the devices
        self.sampler = Sampler(dit)
        self.ti2v = bool(dit.cfg.use_additional_conditions)

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

    def __call__(self, settings: SampleSettings, image: np.ndarray | None) -> GenerationResult:
        if settings.ti2v != self.ti2v:
            raise ValueError(
                f"settings are for {'TI2V' if settings.ti2v else 'T2V'} but the DiT has "
                f"use_additional_conditions={self.ti2v}"
            )
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        f, h, w = latent_grid(settings.frames, settings.height, settings.width, self.vae.cfg)
        channels = self.dit.cfg.in_channels
        noise_key, posterior_key = jax.random.split(jax.random.key(settings.seed))
        text = self.encode_text(settings.prompt, settings.positive_magic, settings.negative_magic)
        jax.block_until_ready(text)
        lap("text_encode_s")
        condition = None
        if self.ti2v:
            if image is None or image.shape != (settings.height, settings.width, 3):
                raise ValueError(
                    f"image must be [{settings.height}, {settings.width}, 3] in [-1, 1] (see prepare_image); "
                    f"got {None if image is None else image.shape}"
                )
            condition = jax.block_until_ready(self.encode_image(image, f, posterior_key))
            lap("image_encode_s")
        # Drawn in the release's layout (b, f, c, h, w) so a seed means the same noise either way.
        noise = jax.random.normal(noise_key, (1, f, channels, h, w), jnp.float32)
        latents = jnp.transpose(noise, (0, 1, 3, 4, 2))  # [1, F', h, w, C]
        sigmas = flow_sigmas(settings.steps, settings.time_shift)
        latents = self.sampler.sample(
            latents,
            sigmas,
            text,
            condition,
            settings.motion_score,
            settings.cfg,
            fused=settings.fused_loop,
            progress=settings.progress,
        )
        jax.block_until_ready(latents)
        lap("denoise_s")
        if self.mesh is None:
            video = self.vae.decode_channels_last(latents)  # [1, F, H, W, 3]
        else:
            from stepvideo_jax.sharding import sharded_vae_decode

            video = sharded_vae_decode(self.vae, latents, self.mesh)  # [1, F, H, W, 3], chunks over devices
        video = np.clip(_to_host(video)[0].astype(np.float32), -1.0, 1.0)  # [F, H, W, 3]
        lap("decode_s")
        return GenerationResult(
            video=video,
            latents=_to_host(latents),
            condition=None if condition is None else _to_host(condition),
            timings=timings,
        )


# ------------------------------------------------------------------------------------------- output
def save_video(video: np.ndarray, settings: SampleSettings) -> dict[str, str]:
    """Writes `<stem>.mp4` and `<stem>.png` (first | last frame) under the output folder, where the
    stem is the sanitised prompt prefix + seed (`-2`, `-3`, ... appended rather than overwrite)."""
    frames = video_io.to_uint8(video)  # [F, H, W, 3]
    if settings.crop_540p:
        frames = video_io.crop_standard_540p(frames)
    stem = video_io.output_stem(settings.prompt, settings.seed)
    mp4, png = video_io.reserve_output_paths(settings.output_dir, stem, [".mp4", ".png"])
    try:
        video_io.write_mp4(mp4, frames, fps=settings.fps, denoise=settings.denoise_filter)
        video_io.write_png(png, np.concatenate([frames[0], frames[-1]], axis=1))
    except BaseException:
        for path in (mp4, png):  # drop our still-empty placeholders, then re-raise
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                os.remove(path)
        raise
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
    from stepvideo_jax.diffusion.residency import SequentialPipeline, check_memory_options, component_loaders

    settings = SampleSettings.from_config(config)
    check_memory_options(config)
    image = prepare_image(settings)
    mesh = _mesh(config)
    if config.get("residency", "all") == "sequential":  # each stage loads its component (timed in its stage)
        pipeline = SequentialPipeline(component_loaders(config, mesh), mesh=mesh)
    else:
        dit, vae, prompt_encoder = load_components(config)
        pipeline = VideoPipeline(dit, vae, prompt_encoder, mesh=mesh)
    t_load = time.perf_counter() - t0
    if mesh is None:
        result = pipeline(settings, image)
    else:
        from stepvideo_jax.sharding import DIT_RULES, use_mesh_rules

        with use_mesh_rules(mesh, DIT_RULES):
            result = pipeline(settings, image)
    t1 = time.perf_counter()
    # Every process computes; only process 0 writes the video.
    paths = save_video(result.video, settings) if is_main_process() else {}
    timings = {"load_s": t_load, **result.timings, "write_s": time.perf_counter() - t1}
    timings["total_s"] = time.perf_counter() - t0
    return {"paths": paths, "settings": settings, "timings": timings, "result": result}
