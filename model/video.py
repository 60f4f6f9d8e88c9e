"""Visual-mask prompts: video frames + an object mask -> masked frames, one per latent frame.

What SAM Audio's processor does (sam_audio/processor.py; SAM_AUDIO.md §5.3), and how it is exposed here:

- **Masking convention — explicit in the API (`mask_marks`).** The official `mask_videos(videos, masks)`
  returns `video * (mask == 0)`: pixels where the mask is non-zero are blacked out. Fed a SAM-style object
  mask (object = 1), as the official README example does, that blacks out the *object*; the official
  SAM-Audio-Bench evaluation loader instead computes `frames * masklet`, keeping *only the object* — the
  convention under which the published numbers were produced. samstream's default is `mask_marks="keep"`:
  non-zero mask pixels mark the object, which stays visible; everything else is black (= the evaluation
  loader, and = the official `mask_videos` given an inverted mask). `mask_marks="blackout"` reproduces
  `mask_videos` literally (non-zero pixels are blacked out). Which one the released weights respond to
  best cannot be settled without them (SAM_AUDIO.md §10); both are one argument away.
- **One frame per latent frame (25 fps), whatever the source rate.** With frame times (a decoded file),
  latent frame j takes the frame whose time is nearest to j·hop/sample_rate (ties: the earlier frame);
  without times (a bare frame tensor) the official rule `linspace(0, N-1, frames).round()` spreads the
  frames evenly over the audio.
- Masks apply at the source resolution, before the vision encoder resizes frames to 336x336
  (`resize_frames`: bicubic, antialiased, rounded back to uint8 as torchvision's Resize does on uint8).

Files: `read_masked_video` decodes a video with PyAV and keeps only the frames some latent frame uses
(masked and already resized, so a long clip does not hold every full-size frame in memory);
`read_mask` reads a static mask image (PNG/JPEG/..., decoded by PyAV) or a .npy array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from samstream.model.errors import PromptError

MASK_MARKS = ("keep", "blackout")


def _as_tensor(array, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu()
    if isinstance(array, np.ndarray):
        if not array.flags.writeable:
            array = np.array(array)
        return torch.from_numpy(np.ascontiguousarray(array))
    raise PromptError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N,H,W,3] -> uint8 [N,size,size,3]: bicubic (align_corners=False, antialias), clamped and rounded
    as torchvision's `Resize((size, size), BICUBIC)` does on uint8 tensors. Frames already at that size are
    returned as they are (the resize would be the identity)."""
    if tuple(frames.shape[1:3]) == (size, size):
        return frames
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1)


def latent_frame_indices(num_frames: int, count: int, hop: int, sample_rate: int,
                         times: torch.Tensor | None = None) -> torch.Tensor:
    """Which video frame each of `count` latent frames uses (the official processor's `load_video`)."""
    if times is None:
        return torch.linspace(0, num_frames - 1, count).round().long()
    audio_times = torch.arange(count) * hop / sample_rate  # float32, as the reference computes it
    return (audio_times[None] - times[:, None]).abs().argmin(dim=0)


def apply_mask(frames: torch.Tensor, mask: torch.Tensor, mask_marks: str) -> torch.Tensor:
    """frames uint8 [N,H,W,3], mask bool [N or 1,H,W] (True = marked) -> masked uint8 frames."""
    keep = mask if mask_marks == "keep" else ~mask
    return frames * keep[..., None]


@dataclass
class MaskedVideo:
    """A visual prompt: RGB frames and the mask of the object to isolate (or frames already masked).

    - `frames`: uint8 [T,H,W,3] RGB (numpy or torch).
    - `mask`: None (frames are already masked), [H,W] (one mask for every frame) or [T,H,W]; bool, or any
      dtype where non-zero = marked.
    - `mask_marks`: "keep" (default: marked pixels are the object and stay, the rest turns black) or
      "blackout" (marked pixels turn black: the official `processor.mask_videos` rule).
    - `times`: each frame's time in seconds from the start of the audio (e.g. index / fps); None spreads
      the frames evenly over the audio (the official rule for frame tensors).
    """

    frames: np.ndarray | torch.Tensor
    mask: np.ndarray | torch.Tensor | None = None
    mask_marks: str = "keep"
    times: Sequence[float] | np.ndarray | torch.Tensor | None = None

    def __post_init__(self):
        frames = _as_tensor(self.frames, "video frames")
        if frames.dim() != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise PromptError(
                f"video frames must be [frames, height, width, 3] RGB, got shape {tuple(frames.shape)}; "
                "a single image is [1, height, width, 3], and channels-first video needs .permute(0, 2, 3, 1)"
            )
        if frames.dtype != torch.uint8:
            raise PromptError(f"video frames must be uint8 (0-255), got {frames.dtype}; convert float frames "
                              "in [0, 1] with (frames * 255).round() cast to uint8")
        self.frames = frames
        if self.mask_marks not in MASK_MARKS:
            raise PromptError(f"mask_marks must be one of {MASK_MARKS}, got {self.mask_marks!r}")
        if self.mask is not None:
            mask = _as_tensor(self.mask, "video mask")
            if mask.dim() == 4 and mask.shape[-1] in (1, 3):  # [T,H,W,C] masks from image files
                mask = mask.ne(0).any(-1)
            if mask.dim() == 2:
                mask = mask[None]
            if mask.dim() != 3 or mask.shape[0] not in (1, frames.shape[0]):
                raise PromptError(
                    f"video mask of shape {tuple(self.mask.shape)} does not fit {frames.shape[0]} frames: give "
                    "[height, width] (one mask for all frames) or [frames, height, width]"
                )
            if tuple(mask.shape[1:]) != tuple(frames.shape[1:3]):
                raise PromptError(
                    f"video mask is {mask.shape[2]}x{mask.shape[1]} (width x height) but the frames are "
                    f"{frames.shape[2]}x{frames.shape[1]}; resize the mask to the video's size (nearest "
                    "neighbour keeps it binary)"
                )
            self.mask = mask.ne(0)
        if self.times is not None:
            times = torch.as_tensor(np.asarray(self.times, dtype=np.float64)).float()
            if times.shape != (frames.shape[0],) or not torch.isfinite(times).all():
                raise PromptError(f"video frame times must be {frames.shape[0]} finite seconds, one per frame, "
                                  f"got shape {tuple(times.shape)}")
            self.times = times

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    def frames_for_latents(self, count: int, hop: int, sample_rate: int) -> torch.Tensor:
        """Masked uint8 frames [count,H,W,3], one per latent frame (masks applied to the chosen frames only)."""
        index = latent_frame_indices(self.num_frames, count, hop, sample_rate, self.times)
        frames = self.frames[index]
        if self.mask is None:
            return frames
        mask = self.mask[index] if self.mask.shape[0] > 1 else self.mask
        return apply_mask(frames, mask, self.mask_marks)


# -- files ----------------------------------------------------------------------------------------------

def _open(path: Path, what: str):
    import av

    if not path.is_file():
        raise PromptError(f"{what} {path} does not exist")
    try:
        return av.open(str(path))
    except Exception as error:  # PyAV raises many container-specific errors
        raise PromptError(f"cannot open {what} {path} ({type(error).__name__}: {error})") from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file -> [H,W] bool (an image: PNG, JPEG, BMP... decoded by PyAV; pixels brighter than half
    intensity are marked) or a .npy array [H,W] / [T,H,W] (non-zero = marked; [T,H,W] stays memory-mapped)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise PromptError(f"mask file {path} does not exist")
        try:
            mask = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise PromptError(f"cannot read mask {path} ({error})") from None
        if mask.ndim not in (2, 3):
            raise PromptError(f"mask {path} has shape {mask.shape}; expected [height, width] or "
                              "[frames, height, width]")
        return np.asarray(mask) != 0 if mask.ndim == 2 else mask  # per-frame masks stay memory-mapped
    with _open(path, "mask image") as container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        frame = next(container.decode(stream), None) if stream is not None else None
        if frame is None:
            raise PromptError(f"{path} holds no image")
        gray = frame.to_ndarray(format="gray")
    return gray >= 128


def read_masked_video(path: str | os.PathLike, count: int, hop: int, sample_rate: int, mask: np.ndarray | None,
                      mask_marks: str = "keep", size: int | None = None) -> MaskedVideo:
    """Decode a video file, keeping only the frames that `count` latent frames use (nearest frame time, frame
    times = index / average fps as the official loader computes them), each masked at the source resolution
    and, with `size`, resized for the vision encoder. `mask`: bool [H,W] or [T,H,W] (frame-indexed) or None."""
    if mask_marks not in MASK_MARKS:
        raise PromptError(f"mask_marks must be one of {MASK_MARKS}, got {mask_marks!r}")
    path = Path(path)
    # Latent frame times and frame-time distances in float32, as the reference's tensors hold them.
    targets = (np.arange(count, dtype=np.int64) * hop).astype(np.float32) / np.float32(sample_rate)
    kept: list[tuple[int, float, torch.Tensor]] = []  # (frame index, time, prepared frame)

    def prepare(index: int, image: np.ndarray) -> torch.Tensor:
        frame = torch.from_numpy(image)[None]
        if mask is not None:
            if mask.ndim == 3 and index >= mask.shape[0]:
                raise PromptError(f"the mask has {mask.shape[0]} frames but the video {path} has more")
            plane = np.asarray(mask[index] if mask.ndim == 3 else mask) != 0
            if plane.shape != image.shape[:2]:
                raise PromptError(
                    f"mask is {plane.shape[1]}x{plane.shape[0]} (width x height) but {path} is "
                    f"{image.shape[1]}x{image.shape[0]}; resize the mask to the video's size"
                )
            frame = apply_mask(frame, torch.from_numpy(np.ascontiguousarray(plane))[None], mask_marks)
        return resize_frames(frame, size)[0] if size else frame[0]

    def keep(index: int, time: float, image: np.ndarray) -> None:
        if not kept or kept[-1][0] != index:
            kept.append((index, time, prepare(index, image)))

    with _open(path, "video") as container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise PromptError(f"{path} has no video stream")
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if fps <= 0:
            raise PromptError(f"{path}: cannot tell the video's frame rate")
        pending = 0  # next latent frame without a video frame
        previous = None  # (index, time, image)
        try:
            for index, decoded in enumerate(container.decode(stream)):
                time = np.float32(index / fps)
                image = decoded.to_ndarray(format="rgb24")
                # Latent frames up to this frame's time: nearest of the previous frame and this one.
                while pending < count and targets[pending] <= time:
                    if previous is not None and abs(targets[pending] - previous[1]) <= abs(time - targets[pending]):
                        keep(*previous)
                    else:
                        keep(index, float(time), image)
                    pending += 1
                previous = (index, float(time), image)
                if pending >= count:
                    break
        except PromptError:
            raise
        except Exception as error:
            raise PromptError(f"cannot decode {path} ({type(error).__name__}: {error})") from None
        if previous is None:
            raise PromptError(f"{path} holds no decodable video frames")
        if pending < count:  # the audio runs past the video's end: the last frame is the nearest
            keep(*previous)
    frames = torch.stack([frame for _, _, frame in kept])
    return MaskedVideo(frames, times=[time for _, time, _ in kept])
