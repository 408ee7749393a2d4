"""`python sample.py ...` from the repository root: the same as the `stepvideo-sample` console script
(see `stepvideo_jax/tools/sample.py` for the flags)."""

from stepvideo_jax.tools.sample import run_main

if __name__ == "__main__":
    run_main()
