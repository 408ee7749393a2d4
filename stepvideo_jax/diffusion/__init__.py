"""Flow-matching sampling (schedule, Euler, CFG loop) and the text-image-to-video pipeline."""

from stepvideo_jax.diffusion.flow_match import euler_step, flow_sigmas, shift_time
from stepvideo_jax.diffusion.sampler import Sampler, TextConditioning, denoise_step, guided_velocity

__all__ = ["Sampler", "TextConditioning", "denoise_step", "euler_step", "flow_sigmas", "guided_velocity", "shift_time"]
