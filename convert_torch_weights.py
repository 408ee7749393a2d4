"""`python convert_torch_weights.py ...` from the repository root: the same as the `stepvideo-convert`
console script (see `stepvideo_jax/tools/convert.py` for the flags)."""

from stepvideo_jax.tools.convert import run_main

if __name__ == "__main__":
    run_main()
