"""Turn an episode video of --eval-only --capture-video into a small looping GIF, for a README.

The scripts render one deterministic episode per task at 40 frames per second (the walker's 25 ms control
step) into {task}.mp4 beside the checkpoint; a GIF of its first seconds at a lower frame rate and width stays
small enough to commit (README.md's GIFs were made by the commands in docs/media/README.md):

    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python bc.py --eval-only --checkpoint docs/media/bc_walk/model.pt --capture-video
    python scripts/video_to_gif.py docs/media/bc_walk/walk.mp4 docs/media/bc_walk.gif --seconds 8 --fps 20 --width 240
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from walker_data import Range, atomic_write_bytes, check_ranges  # noqa: E402  (shared with the data tools)


@dataclass
class Args:
    video: tyro.conf.Positional[str]
    """the episode video (an mp4 written by --capture-video)"""
    gif: tyro.conf.Positional[str]
    """where to write the GIF"""
    seconds: Annotated[float, Range("(0, inf)")] = 8.0
    """how much of the episode, from its start, in (0, inf)"""
    fps: Annotated[float, Range("(0, inf)")] = 20.0
    """frames per second of the GIF, in (0, inf); at most the video's (every k-th frame is kept)"""
    width: Annotated[int, Range("[8, inf)")] = 240
    """width of the GIF in pixels, in [8, inf); the height keeps the video's aspect ratio"""


def read_video(path: str) -> tuple[list[np.ndarray], float]:
    """The video's frames (RGB, uint8) and frames per second; one clear line where it is not a readable video."""
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise SystemExit(f"error: {path}: no such video")
    try:
        fps = float(iio.immeta(path).get("fps", 0))
        frames = list(iio.imiter(path))
    except Exception as exc:  # noqa: BLE001  (imageio raises many types for a broken or foreign file)
        raise SystemExit(f"error: {path}: not a readable video ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    if not frames or fps <= 0:
        raise SystemExit(f"error: {path}: a video without frames or without a frame rate")
    return frames, fps


def to_gif(frames: list[np.ndarray], video_fps: float, seconds: float, fps: float, width: int) -> bytes:
    """Every k-th frame of the first `seconds` (k = video_fps / fps, rounded), scaled to `width`, as a looping
    GIF whose frame duration keeps real time."""
    from PIL import Image

    if fps > video_fps:
        raise SystemExit(f"error: --fps {fps:g} is above the video's {video_fps:g} frames per second")
    every = max(1, round(video_fps / fps))
    kept = frames[:max(1, int(round(seconds * video_fps)))][::every]
    height = max(1, round(width * kept[0].shape[0] / kept[0].shape[1]))
    images = [Image.fromarray(frame).resize((width, height), Image.LANCZOS) for frame in kept]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], loop=0, optimize=True,
                   duration=round(1000 * every / video_fps))
    return out.getvalue()


def main(args: Args) -> None:
    check_ranges(args)
    frames, video_fps = read_video(args.video)
    gif = to_gif(frames, video_fps, args.seconds, args.fps, args.width)
    atomic_write_bytes(args.gif, gif)
    print(f"wrote {args.gif}: {len(gif) / 1e6:.2f} MB")


if __name__ == "__main__":
    main(tyro.cli(Args))
