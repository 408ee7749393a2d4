"""`python train.py ...` from the repository root: the same as the `stepvideo-train` console script
(see `stepvideo_jax/tools/train.py` for the flags)."""

from stepvideo_jax.tools.train import run_main

if __name__ == "__main__":
    run_main()
