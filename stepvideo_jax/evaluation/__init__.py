"""Image-to-video evaluation: metrics over frames (``metrics``), reports (``reports``) and benchmark /
folder runs (``runner``); the command line is ``python -m stepvideo_jax.tools.evaluate``."""

from stepvideo_jax.evaluation.metrics import (
    DIRECTION_MIN_FLOW,
    PSNR_MAX_DB,
    check_video,
    evaluate_video,
    first_frame_fidelity,
    image_to_uint8,
    motion_direction,
    smoothness,
    summarize,
)
from stepvideo_jax.evaluation.reports import CSV_COLUMNS, SHEET_FRAMES, SHEET_MAX_HEIGHT, contact_sheet, write_reports
from stepvideo_jax.evaluation.runner import (
    BENCH_LAYOUT,
    IMAGE_EXTENSIONS,
    evaluate_benchmark,
    evaluate_folder,
    find_benchmark_items,
)

__all__ = [
    "PSNR_MAX_DB",
    "DIRECTION_MIN_FLOW",
    "CSV_COLUMNS",
    "SHEET_FRAMES",
    "SHEET_MAX_HEIGHT",
    "BENCH_LAYOUT",
    "IMAGE_EXTENSIONS",
    "check_video",
    "first_frame_fidelity",
    "motion_direction",
    "smoothness",
    "evaluate_video",
    "summarize",
    "contact_sheet",
    "image_to_uint8",
    "find_benchmark_items",
    "evaluate_benchmark",
    "evaluate_folder",
    "write_reports",
]
