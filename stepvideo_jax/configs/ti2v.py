"""Sampling config for Step-Video-TI2V (text + first image -> video).

    python sample.py --config=ti2v          # the released 30B model (converted checkpoint)
    python sample.py --config=ti2v:tiny     # small random-weight models, runs on a laptop

Any field can be overridden: `--config.prompt="..." --config.image=cat.png --config.seed=7`.
"""

from ml_collections import config_dict

# The release's default magic strings (Step-Video-TI2V `stepvideo/config.py`): the positive one is
# appended to the prompt, the negative one is the whole unconditional prompt.
POSITIVE_MAGIC = (
    "画面中的主体动作表现生动自然、画面流畅、生动细节、光线统一柔和、超真实动态捕捉、大师级运镜、整体不变形、"
    "超高清、画面稳定、逼真的细节、专业级构图、超细节、清晰。"
)
NEGATIVE_MAGIC = (
    "动画、模糊、变形、毁容、低质量、拼贴、粒状、标志、抽象、插图、计算机生成、扭曲、动作不流畅、面部有褶皱、"
    "表情僵硬、畸形手指"
)
VARIANTS = ("", "tiny")


def base_config(variant: str = "") -> config_dict.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown config variant {variant!r}; expected one of: {', '.join(repr(v) for v in VARIANTS)}")
    c = config_dict.ConfigDict()
    c.variant = variant or "release"  # "release": converted 30B checkpoints; "tiny": random weights
    c.pipeline = "ti2v"  # "ti2v" (first image + motion score) or "t2v"
    c.use_additional_conditions = True  # image condition + motion score (False: text-to-video)
    c.checkpoint_dir = "checkpoints/stepvideo-ti2v"  # written by convert_torch_weights.py
    # LoRA adapters merged into the DiT at load: comma-separated .safetensors files written by train.py
    # (a LoRA run's WORKDIR/adapter.safetensors) and their scales ("1.0", or one per adapter).
    c.lora = ""
    c.lora_scale = "1.0"

    c.prompt = "笑起来"  # what should happen in the video
    c.positive_magic = POSITIVE_MAGIC  # appended to the prompt (the release's quality words)
    c.negative_magic = NEGATIVE_MAGIC  # the whole unconditional prompt of classifier-free guidance
    c.image = ""  # first frame (PNG/JPEG path); "synthetic" = a built-in test pattern
    c.max_image_pixels = 100_000_000  # larger first images are refused (checked from the header, before decoding)
    c.frames = 102  # rounded down to a multiple of 17 (17 frames -> 3 latent frames)
    c.height = 544  # rounded down to a multiple of 16
    c.width = 992
    c.steps = 50  # denoising (Euler) steps
    c.cfg = 9.0  # classifier-free guidance scale (0 = unconditional only, 1 = no guidance)
    c.time_shift = 13.0  # the official README's recommendation (the release's config.py says 7.0)
    c.motion_score = 5.0  # how much motion to ask for (TI2V; the release trained with 1..20-ish values)
    c.seed = 1234  # the initial noise and the image latent's posterior sample
    # Batch generation: a JSON-lines file, one video per line: {"image": ..., "prompt": ..., "motion_score": ...,
    # "seed": ..., "name": optional output stem}; missing keys take this config's values ("" = one video).
    c.prompts = ""  # batch generation: a JSON-lines file of videos ("" = one video from this config)

    c.output_dir = "outputs"  # where <prompt>-seed<seed>.mp4/.png are written (never overwriting)
    c.fps = 25  # frames per second of the written MP4
    c.denoise_filter = True  # the release's light temporal ffmpeg filter (atadenoise)
    c.crop_540p = True  # the release crops 544x992 output to 540x960 (frames at least that big)
    c.fused_loop = False  # run all steps in one compiled lax.fori_loop (no per-step progress)
    c.progress = True  # progress bars
    c.vocabulary_warning = False  # one-line warning when prompt words are not whole words of the CLIP tokenizer
    # Fewer DiT evaluations (stepvideo_jax.diffusion.cache; measured in BENCHMARKS.md). Off here: the
    # release config reproduces the official sampler's output. policy: none | first_block | static | auto
    # (auto = static when mag_ratios are calibrated, else first_block).
    c.cache = config_dict.ConfigDict(
        dict(
            policy="none",
            first_block_threshold=0.1,  # first_block: relative L1 change of block 0's residual that forces a compute
            static_threshold=0.1,  # static: accumulated |1 - magnitude ratio| allowed while reusing
            max_skips=2,  # at most this many reused steps in a row
            warmup=0.2,  # leading fraction of the steps always computed
            mag_ratios=(),  # static: per-step ratios from `python -m stepvideo_jax.tools.calibrate_cache`
        )
    )
    c.guidance_interval = (0.0, 1.0)  # CFG only on steps i with lo <= i/steps < hi; conditional row only elsewhere

    # Compute / parameter dtypes per component, attention kernel and device mesh.
    c.dit_dtype = "bfloat16"  # compute dtype of the DiT
    c.vae_dtype = "bfloat16"  # compute dtype of the VAE
    c.text_dtype = "bfloat16"  # compute dtype of the text encoders
    c.param_dtype = ""  # "" = the dtype the checkpoint was converted to
    c.attention_kernel = "auto"  # splash on TPU, cudnn on GPU, chunked on CPU (see stepvideo_jax.attention)
    # Memory: "all" keeps every component resident; "sequential" loads text encoders, VAE and DiT one
    # stage at a time (peak = the largest stage). Weight-only quantization of the DiT / Step-LLM at
    # restore: "" = as converted, "none", "int8", "fp8" (see stepvideo_jax.components.component_loaders).
    c.residency = "all"
    c.dit_quantize = ""
    c.text_quantize = ""
    c.mesh = ""  # "" = one device, no mesh; else axis sizes, e.g. "fsdp=-1" or "data=2,fsdp=4" (sharding.MeshConfig)
    c.compilation_cache_dir = ""  # JAX persistent compilation cache folder ("" = off); repeat runs skip compiling
    c.tokenizer_cache_dir = (
        ""  # tiny: where the tiny tokenizers are built ("" = ~/.cache/stepvideo_jax/tiny_tokenizers)
    )

    if variant == "tiny":
        c.image = "synthetic"
        c.frames = 17
        c.height = 64
        c.width = 96
        c.steps = 8
        c.dit_dtype = c.vae_dtype = c.text_dtype = "float32"
        c.param_dtype = "float32"
        c.output_dir = "outputs/tiny"
        c.denoise_filter = False
        c.tiny = config_dict.ConfigDict(
            dict(
                seed=0,  # parameter init seed
                z_channels=4,  # latent channels of the tiny VAE (and the DiT's in/out channels)
                vae_width=8,  # VAE base width (levels x1, x1, x2, x2); decoding at full resolution dominates the time
                vae_norm_groups=8,
                dit_layers=2,
                dit_heads=2,
                dit_head_dim=32,
            )
        )
    return c


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    return base_config((arg or "").strip())
