"""Command-line tools: parity (`python -m stepvideo_jax.tools.parity`), the local multi-process launcher
(`python -m stepvideo_jax.tools.launch`)."""
