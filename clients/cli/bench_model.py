"""`samstream bench model`: SAM Audio cost per second of audio, for one network evaluation and for a
full sampling run, per configuration (random weights: speed does not depend on their values).

Configurations: `parity` (the shared test model, 200 Hz codec), `tiny` (a small DiT on the real 48 kHz
codec), and the released sizes `small`, `base`, `large` (dims of ../shared/parity/keys_*.json; slow on a
CPU, so not in the default set here; the default on a GPU). `--vision N` also times the PE-Core-L14-336
vision tower (visual-mask prompts: one frame per latent frame, 25 frames per second of audio) on N frames.
`--side-models` times the PE-A-Frame span predictor and the SAM Audio Judge (clients/cli/bench_side_models.py):
the extras' small models and the real code-default sizes (default: both).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

SIZES = {
    "small": dict(dim=1536, n_heads=12, n_layers=12),
    "base": dict(dim=2048, n_heads=16, n_layers=16),
    "large": dict(dim=2816, n_heads=22, n_layers=22),
    "tiny": dict(dim=256, n_heads=2, n_layers=4),
}
REAL_CODEC = dict(encoder_dim=64, encoder_rates=[2, 8, 10, 12], latent_dim=1024, decoder_dim=1536,
                  decoder_rates=[12, 10, 8, 2], n_codebooks=16, codebook_size=1024, codebook_dim=128,
                  quantizer_dropout=False, sample_rate=48000, mean=0.0, std=1.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", default=None,
                        help="comma-separated of parity,tiny,small,base,large (default: parity,tiny on CPU; "
                             "small,base,large on GPU)")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio duration per run")
    parser.add_argument("--evaluations", default="32,8", help="network evaluations for full runs (midpoint: 2/step)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vision", type=int, default=0, metavar="FRAMES",
                        help="also time the PE-Core-L14-336 vision tower on this many 640x360 frames (0: skip)")
    parser.add_argument("--side-models", default="extras,real", metavar="WHICH",
                        help="span predictor and Judge: comma-separated of extras (small test models), real "
                             "(code-default sizes, random weights), or none (default: extras,real)")


PARITY_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "parity"


def sam_config(name: str) -> dict | None:
    if name == "parity":
        return None
    dims = SIZES[name]
    transformer = dict(dims, out_channels=256, context_dim=dims["dim"])
    return {"in_channels": 768, "audio_codec": REAL_CODEC, "transformer": transformer,
            "text_encoder": {"name": "t5-base", "dim": 768}, "vision_encoder": {"name": "PE-Core-L14-336", "dim": 1024},
            "num_anchors": 3, "anchor_embedding_dim": 128}


def build(config: dict, device, dtype):
    import torch

    from samstream.model.loading import rebuild_buffers
    from samstream.model.sam_audio import SAMAudio, SAMAudioConfig

    parsed = SAMAudioConfig.from_dict(config)
    with torch.device("meta"):
        model = SAMAudio(parsed)
    model = model.to_empty(device=device)
    rebuild_buffers(model, everything=True)  # to_empty left the RoPE tables uninitialised
    model = model.to(device)
    with torch.no_grad():
        for parameter in model.parameters():  # random weights; scaled so activations stay finite
            parameter.normal_(0, 0.02) if parameter.dim() > 1 else parameter.fill_(1.0)
    return model.to(device=device, dtype=dtype).eval()


def timed(fn, device, repeats: int) -> float:
    import torch

    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench_config(name: str, config: dict, args, device, dtype) -> dict:
    import torch

    from samstream.model.sampling import SolverConfig
    from samstream.model.separator import SAMAudioSeparator

    if name == "parity":  # the shared test checkpoint itself (its shrunk watermark widths come from its tensors)
        from samstream.model.loading import load_sam_audio

        model = load_sam_audio(PARITY_DIR, progress=False).model.to(device=device, dtype=dtype)
    else:
        model = build(config, device, dtype)
    rate = model.config.audio_codec.sample_rate
    separator = SAMAudioSeparator(model)
    samples = int(args.seconds * rate)
    hop = model.audio_codec.hop_length
    samples = -(-samples // (hop * model.audio_codec.decode_frame_multiple)) * hop * model.audio_codec.decode_frame_multiple
    wav = torch.randn(1, 1, samples, device=device, dtype=dtype) * 0.1
    seconds = samples / rate
    result = {"config": name, "params_dit_heads": sum(p.numel() for k, p in model.named_parameters()
                                                      if not k.startswith("audio_codec.")),
              "audio_seconds": seconds, "frames": samples // hop}
    with torch.inference_mode():
        latent = model.audio_codec.encode(wav)
        z = latent.transpose(1, 2)
        features = torch.cat([z, z], -1)
        frames = features.shape[1]
        pad_mask = torch.ones(1, frames, dtype=torch.bool, device=device)
        from samstream.model.anchors import anchor_tokens
        tokens = anchor_tokens(None, [frames], frames, rate, hop)
        from samstream.model.separator import SamplingInputs
        inputs = SamplingInputs(features, pad_mask, None, None, tokens.ids.to(device), tokens.alignment.to(device),
                                torch.zeros(1, model.config.vision_dim, frames, device=device, dtype=dtype))
        noise = torch.randn(features.shape, device=device, dtype=dtype)
        t = torch.zeros(1, device=device)
        conditioning = model.frame_conditioning(features, inputs.video_features, inputs.anchor_ids, inputs.anchor_alignment)
        memory = model.memory(None, t)

        def one_evaluation():
            model.velocity(noise, t, conditioning, memory, None, pad_mask)

        result["nfe_s_per_audio_s"] = timed(one_evaluation, device, args.repeats) / seconds
        result["codec_encode_s_per_audio_s"] = timed(lambda: model.audio_codec.encode(wav), device, args.repeats) / seconds
        state = noise.float()
        result["codec_decode_s_per_audio_s"] = timed(lambda: separator.decode(state), device, args.repeats) / seconds
        for evaluations in (int(e) for e in args.evaluations.split(",")):
            solver = SolverConfig("midpoint", evaluations // 2) if evaluations >= 2 else SolverConfig("euler", 1)
            full = timed(lambda: separator.decode(separator.sample(inputs, noise=noise, solver=solver)), device, 1)
            result[f"full_{evaluations}nfe_s_per_audio_s"] = full / seconds
    return result


def bench_vision(frames: int, repeats: int, device, dtype) -> dict:
    """The real-size vision tower with random weights (meta build, then empty storage): time per video frame."""
    import torch

    from samstream.model.vision import VisionEncoder, VisionEncoderConfig

    with torch.device("meta"):
        encoder = VisionEncoder(VisionEncoderConfig())
    encoder = encoder.to_empty(device=device)
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            parameter.normal_(0, 0.02) if parameter.dim() > 1 else parameter.fill_(1.0 if "ln" in name else 0.0)
    encoder = encoder.to(dtype).eval()
    video = torch.randint(0, 256, (frames, 360, 640, 3), dtype=torch.uint8)
    seconds = timed(lambda: encoder.encode_frames(video), device, repeats)
    per_frame = seconds / frames
    return {"config": "PE-Core-L14-336 (vision)", "params": sum(p.numel() for p in encoder.parameters()),
            "frames": frames, "ms_per_frame": per_frame * 1000, "s_per_audio_s": per_frame * 25}


def run(args: argparse.Namespace) -> int:
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    names = (args.configs or ("small,base,large" if device.type == "cuda" else "parity,tiny")).split(",")
    results = []
    for name in names:
        if name not in SIZES and name != "parity":
            raise SystemExit(f"unknown config {name!r}; choose from parity,{','.join(SIZES)}")
        row = bench_config(name, sam_config(name), args, device, dtype)
        results.append(row)
        print(f"{name:7s} params {row['params_dit_heads'] / 1e6:8.1f} M  one NFE {row['nfe_s_per_audio_s']:.4f} s/s  "
              + "  ".join(f"{k.split('_')[1]} {v:.3f} s/s" for k, v in row.items() if k.startswith("full_"))
              + f"  codec enc {row['codec_encode_s_per_audio_s']:.3f} dec(2 streams) {row['codec_decode_s_per_audio_s']:.3f} s/s")
    if args.vision:
        row = bench_vision(args.vision, args.repeats, device, dtype)
        results.append(row)
        print(f"vision  params {row['params'] / 1e6:8.1f} M  {row['ms_per_frame']:.0f} ms/frame  "
              f"{row['s_per_audio_s']:.2f} s per second of audio (25 frames)")
    if args.side_models != "none":
        from samstream.clients.cli.bench_side_models import bench_side_models, describe

        for row in bench_side_models(args.side_models.split(","), args.seconds, args.repeats, device, dtype, timed):
            results.append(row)
            print(describe(row))
    report = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
              "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "results": results}
    if args.json:
        print(json.dumps(report))
    return 0
