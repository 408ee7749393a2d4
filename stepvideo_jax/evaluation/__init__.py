"""Image-to-video evaluation: metrics over frames (``metrics``), reports (``reports``) and benchmark /
folder runs (``runner``); the command line is ``python -m stepvideo_jax.tools.evaluate``."""

from stepvideo_jax.evaluation.metrics import (
    DIRECTION_MIN_FLOW,
    DIRECTION_PAIRS,
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
    "BENCH_LAYOUT",
    "CSV_COLUMNS",
    "DIRECTION_MIN_FLOW",
    "DIRECTION_PAIRS",
    "IMAGE_EXTENSIONS",
    "PSNR_MAX_DB",
    "SHEET_FRAMES",
    "SHEET_MAX_HEIGHT",
    "check_video",
    "contact_sheet",
    "evaluate_benchmark",
    "evaluate_folder",
    "evaluate_video",
    "find_benchmark_items",
    "first_frame_fidelity",
    "image_to_uint8",
    "motion_direction",
    "smoothness",
    "summarize",
    "write_reports",
]
