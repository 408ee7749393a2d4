"""Command-line tools: parity (`python -m stepvideo_jax.tools.parity`)."""
