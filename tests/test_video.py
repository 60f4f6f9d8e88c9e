"""Visual-mask prompts (model/video.py): masking conventions, one frame per latent frame, files, errors."""

import numpy as np
import pytest
import torch

from samstream.model.errors import PromptError
from samstream.model.video import MaskedVideo, latent_frame_indices, read_mask, read_masked_video, resize_frames


def gray_frames(count: int, height: int = 24, width: int = 20) -> np.ndarray:
    """Frame i is uniformly 10*i, so a chosen frame tells its index (within a step or two after a YUV codec)."""
    return np.stack([np.full((height, width, 3), 10 * i, np.uint8) for i in range(count)])


def write_video(path, frames: np.ndarray, fps: int = 30) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_all(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_mask_conventions():
    frames = np.full((2, 4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    keep = MaskedVideo(frames, mask).frames_for_latents(2, 8, 200)
    blackout = MaskedVideo(frames, mask, mask_marks="blackout").frames_for_latents(2, 8, 200)
    assert (keep[:, 1:3, 1:3] == 200).all() and keep.sum() == 2 * 4 * 3 * 200  # only the object stays
    assert (blackout[:, 1:3, 1:3] == 0).all() and (blackout[:, 0] == 200).all()  # the official mask_videos rule
    assert torch.equal(keep + blackout, torch.from_numpy(frames))
    per_frame = np.stack([mask, ~mask])
    both = MaskedVideo(frames, per_frame.astype(np.uint8)).frames_for_latents(2, 8, 200)
    assert (both[0, 0, 0] == 0).all() and (both[1, 0, 0] == 200).all()


def test_one_frame_per_latent_frame():
    # Without times: the official linspace rule spreads the frames over the audio.
    assert latent_frame_indices(10, 4, 8, 200).tolist() == [0, 3, 6, 9]
    # With times: the nearest frame to j * hop / rate (25 latent frames/s); ties go to the earlier frame.
    fps = 50
    times = torch.arange(12) / fps
    assert latent_frame_indices(12, 5, 8, 200, times).tolist() == [0, 2, 4, 6, 8]
    times = torch.tensor([0.0, 0.02, 0.06])  # latent time 0.04 is 0.02 from frames 1 and 2
    assert latent_frame_indices(3, 3, 8, 200, times).tolist() == [0, 1, 2]
    video = MaskedVideo(gray_frames(12), times=times.tolist() + [0.1 + i for i in range(9)])
    assert video.frames_for_latents(3, 8, 200)[:, 0, 0, 0].tolist() == [0, 10, 20]


@pytest.mark.parametrize("frames,mask,message", [
    (np.zeros((3, 8, 8), np.uint8), None, "must be \\[frames, height, width, 3\\]"),
    (np.zeros((3, 3, 8, 8), np.uint8), None, "channels-first video needs .permute"),
    (np.zeros((3, 8, 8, 3), np.float32), None, "must be uint8"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.ones((8, 6), bool), "mask is 6x8 .* but the frames are 8x8; resize"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.ones((2, 8, 8), bool), "does not fit 3 frames"),
])
def test_bad_frames_and_masks_are_clear_errors(frames, mask, message):
    with pytest.raises(PromptError, match=message):
        MaskedVideo(frames, mask)


def test_bad_mask_marks_and_times():
    with pytest.raises(PromptError, match="mask_marks must be one of"):
        MaskedVideo(gray_frames(2), np.ones((24, 20), bool), mask_marks="inside")
    with pytest.raises(PromptError, match="2 finite seconds"):
        MaskedVideo(gray_frames(2), times=[0.0])


def test_read_mask_image_and_npy(tmp_path):
    import av

    image = np.zeros((24, 20), np.uint8)
    image[5:15, 4:12] = 255
    with av.open(str(tmp_path / "mask.png"), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 20, 24, "gray"
        for packet in list(stream.encode(av.VideoFrame.from_ndarray(image, format="gray"))) + list(stream.encode()):
            container.mux(packet)
    assert np.array_equal(read_mask(tmp_path / "mask.png"), image > 0)
    np.save(tmp_path / "mask.npy", image)
    assert np.array_equal(read_mask(tmp_path / "mask.npy"), image > 0)
    with pytest.raises(PromptError, match="does not exist"):
        read_mask(tmp_path / "missing.png")


def test_read_masked_video_keeps_exactly_the_frames_the_latent_frames_use(tmp_path):
    frames = gray_frames(20)
    write_video(tmp_path / "clip.mkv", frames, fps=30)
    mask = np.zeros((24, 20), bool)
    mask[:12] = True
    count = 20  # 0.8 s of latent frames at 25/s; the video is 0.67 s long: the tail uses the last frame
    video = read_masked_video(tmp_path / "clip.mkv", count, 8, 200, mask)
    every = MaskedVideo(decode_all(tmp_path / "clip.mkv"), mask, times=np.arange(20) / 30)  # time = index / fps
    assert torch.equal(video.frames_for_latents(count, 8, 200), every.frames_for_latents(count, 8, 200))
    assert video.num_frames < 20  # frames no latent frame uses were never kept
    assert abs(int(video.frames_for_latents(count, 8, 200)[-1, 0, 0, 0]) - 190) <= 2  # the last frame
    resized = read_masked_video(tmp_path / "clip.mkv", count, 8, 200, mask, size=16)
    assert resized.frames.shape[1:] == (16, 16, 3)
    assert torch.equal(resized.frames, resize_frames(video.frames, 16))
    with pytest.raises(PromptError, match="mask is 10x24 .* but .* is 20x24"):
        read_masked_video(tmp_path / "clip.mkv", count, 8, 200, np.ones((24, 10), bool))
    with pytest.raises(PromptError, match="cannot open video"):
        (tmp_path / "junk.mp4").write_bytes(b"not a video")
        read_masked_video(tmp_path / "junk.mp4", count, 8, 200, None)
