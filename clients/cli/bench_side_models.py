"""`samstream bench model --side-models ...`: what SAM Audio's side models cost (model/components.py).

- PE-A-Frame span predictor, on the mixture latents SAM Audio already has (its own DAC encoder is not run):
  seconds of compute per second of audio, per 10 s sliding window (what `serve --predict-spans` adds to
  each window), and the text embedding (once per prompt; cached).
- SAM Audio Judge, on one (mixture, candidate) pair: seconds per second of audio (reranking K candidates
  costs K pairs), and one 5 s live window (`serve --quality-interval`).
`extras` are the small models of ../shared/parity/extras; `real` builds the code-default sizes of the
official configs (PE-A-Frame 634 M, Judge 598 M parameters; the released files may be larger, see
docs/sam_audio.md) with random weights: speed does not depend on their values.
"""

from __future__ import annotations

from pathlib import Path

EXTRAS = Path(__file__).resolve().parents[2].parent / "shared" / "parity" / "extras"
WINDOW_FRAMES = 250  # the sliding window's default 10 s at 25 frames/s
LIVE_WINDOW_S = 5.0  # serve --quality-window's default


def random_module(build, config: dict, device, dtype):
    """A side model of `config` built on the meta device, given storage and random weights (bench only)."""
    import torch

    from samstream.model.loading import rebuild_buffers

    with torch.device("meta"):
        model, _ = build(config)
    model = model.to_empty(device=device)
    rebuild_buffers(model, everything=True)  # to_empty left the RoPE tables uninitialised
    model = model.to(device)
    with torch.no_grad():
        for parameter in model.parameters():  # scaled so activations stay finite
            parameter.normal_(0, 0.02) if parameter.dim() > 1 else parameter.fill_(1.0)
    return model.to(dtype).eval()


def load(kind: str, source: str, device, dtype):
    from samstream.model.components import JUDGE, SPAN_PREDICTOR, build_judge, build_span_predictor, load_module

    build = build_span_predictor if kind == "span" else build_judge
    if source == "extras":
        component = SPAN_PREDICTOR if kind == "span" else JUDGE
        model, _ = load_module(EXTRAS / ("pe_a_frame" if kind == "span" else "judge"), component, build, dtype, device)
        return model
    return random_module(build, {}, device, dtype)


def memory(model) -> dict:
    parameters = sum(p.numel() for p in model.parameters())
    return {"params": parameters, "memory_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}


def bench_span_predictor(source: str, seconds: float, repeats: int, device, dtype, timed) -> dict:
    import torch

    model = load("span", source, device, dtype)
    channels = model.config.dac.codebook_dim
    frames = round(seconds / model.config.seconds_per_frame)
    latents = torch.randn(1, frames, channels, device=device, dtype=dtype)
    window = torch.randn(1, WINDOW_FRAMES, channels, device=device, dtype=dtype)
    vocab = model.text_model.embeddings.tok_embeddings.num_embeddings
    tokens = torch.randint(3, vocab, (1, 8), device=device)
    with torch.inference_mode():
        text = model.embed_text(tokens)
        audio_s = timed(lambda: model.logits(model.embed_audio(latents), text), device, repeats)
        window_s = timed(lambda: model.logits(model.embed_audio(window), text), device, repeats)
        text_s = timed(lambda: model.embed_text(tokens), device, repeats)
    return {"config": f"PE-A-Frame span predictor ({source})", **memory(model), "audio_seconds": seconds,
            "s_per_audio_s": audio_s / seconds, "ms_per_10s_window": window_s * 1000,
            "ms_per_prompt_text": text_s * 1000}


def bench_judge(source: str, seconds: float, repeats: int, device, dtype, timed) -> dict:
    import torch

    from samstream.model.judge import prepare_inputs, JudgeInputs

    model = load("judge", source, device, dtype)
    rate, hop = model.config.sample_rate, model.config.audio_codec.hop_length
    vocab = model.text_model.embeddings.tok_embeddings.num_embeddings
    tokens = torch.randint(3, vocab, (1, 8), device=device)

    def pair(duration: float) -> JudgeInputs:
        wav = torch.randn(round(duration * rate)) * 0.1
        inputs = prepare_inputs([wav], [0.5 * wav], hop)
        return JudgeInputs(inputs.mixture.to(device, dtype), inputs.candidate.to(device, dtype), inputs.padding_mask)

    clip, live = pair(seconds), pair(LIVE_WINDOW_S)
    with torch.inference_mode():
        clip_s = timed(lambda: model(tokens, None, clip), device, repeats)
        live_s = timed(lambda: model(tokens, None, live), device, repeats)
    return {"config": f"SAM Audio Judge ({source})", **memory(model), "audio_seconds": seconds,
            "s_per_audio_s": clip_s / seconds, "s_per_live_window": live_s, "live_window_s": LIVE_WINDOW_S}


def bench_side_models(sources: list[str], seconds: float, repeats: int, device, dtype, timed) -> list[dict]:
    rows = []
    for source in sources:
        if source not in ("extras", "real"):
            raise SystemExit(f"unknown --side-models entry {source!r}; choose from extras,real (or none)")
        rows.append(bench_span_predictor(source, seconds, repeats, device, dtype, timed))
        rows.append(bench_judge(source, seconds, repeats, device, dtype, timed))
    return rows


def describe(row: dict) -> str:
    head = f"{row['config']:42s} params {row['params'] / 1e6:7.1f} M ({row['memory_mib']:.0f} MiB)"
    if "ms_per_10s_window" in row:
        return (f"{head}  {row['s_per_audio_s']:.4f} s/s  {row['ms_per_10s_window']:.1f} ms per 10 s window  "
                f"{row['ms_per_prompt_text']:.1f} ms per prompt")
    return f"{head}  {row['s_per_audio_s']:.4f} s/s  {row['s_per_live_window']:.3f} s per {row['live_window_s']:g} s live window"
