"""scripts/video_to_gif.py: an episode video (as --capture-video writes it) to a small looping GIF."""

import numpy as np
import pytest
from conftest import run_script


def write_tiny_video(path, frames: int = 40, fps: int = 40) -> None:
    """A 64x48 video whose frame i is all grey level 6 * i (so a GIF frame tells which video frame it is)."""
    import imageio

    imageio.mimwrite(path, [np.full((48, 64, 3), 6 * i, np.uint8) for i in range(frames)], fps=fps)


def test_a_video_becomes_every_kth_frame_of_its_first_seconds_at_the_asked_width(tmp_path):
    from PIL import Image, ImageSequence

    write_tiny_video(tmp_path / "walk.mp4")
    result = run_script("scripts/video_to_gif.py", str(tmp_path / "walk.mp4"), str(tmp_path / "walk.gif"),
                        "--seconds", "0.5", "--fps", "20", "--width", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "walk.gif" in result.stdout
    gif = Image.open(tmp_path / "walk.gif")
    frames = [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(gif)]
    assert gif.size == (32, 24) and gif.info["loop"] == 0 and gif.info["duration"] == 50  # 2 video frames each
    assert len(frames) == 10  # the first 0.5 s (20 frames of 40 per second), every second one
    levels = [float(frame.mean()) for frame in frames]
    assert all(abs(level - 12 * i) <= 4 for i, level in enumerate(levels)), levels  # frames 0, 2, 4, ... in order


@pytest.mark.parametrize("flags, fault", [
    (["missing.mp4", "out.gif"], "missing.mp4: no such video"),
    (["notavideo.mp4", "out.gif"], "notavideo.mp4: not a readable video"),
    (["walk.mp4", "out.gif", "--fps", "60"], "--fps 60 is above the video's 40 frames per second"),
    (["walk.mp4", "out.gif", "--width", "0"], "--width 0 is outside its range [8, inf)"),
])
def test_bad_input_is_one_line_and_no_gif(tmp_path, flags, fault):
    write_tiny_video(tmp_path / "walk.mp4", frames=4)
    (tmp_path / "notavideo.mp4").write_text("not a video")
    result = run_script("scripts/video_to_gif.py", *[str(tmp_path / f) if f.endswith((".mp4", ".gif")) else f
                                                      for f in flags], cwd=tmp_path)
    assert result.returncode != 0 and fault in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.gif").exists()
