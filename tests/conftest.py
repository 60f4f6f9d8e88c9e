import json
from pathlib import Path

import pytest
import torch

# The shared folder sits beside the repository, on developer machines and on CI alike.
SHARED = Path(__file__).resolve().parents[2] / "shared"
PARITY = SHARED / "parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    assert (PARITY / "config.json").is_file(), f"parity vectors not found at {PARITY}"
    return PARITY


@pytest.fixture(scope="session")
def parity_vectors(parity_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(parity_dir / "vectors.safetensors"))


@pytest.fixture(scope="session")
def parity_meta(parity_dir) -> dict:
    return json.loads((parity_dir / "vectors.json").read_text())


@pytest.fixture(scope="session")
def parity_model(parity_dir):
    from samstream.model.loading import load_sam_audio

    return load_sam_audio(parity_dir, progress=False).model


@pytest.fixture
def one_torch_thread():
    """Tiny per-chunk ops: one thread is fastest, and oversubscribed threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def processor():
    """A random-weight embedded model behind the block-causal adapter: real, fast, 16 kHz (serving tests)."""
    from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, EmbeddedSeparator
    from samstream.stream.regimes.block_causal import BlockCausalProcessor

    # One thread: on the shared 2-core machine, two torch threads made each step ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield BlockCausalProcessor(EmbeddedSeparator(EmbeddedModel(EmbeddedConfig())))
    torch.set_num_threads(threads)


def write_vision_checkpoint(directory: Path, parity: Path) -> Path:
    """The parity model plus a tiny random PE-Core CLIP (visual and text towers) under vision_encoder.model.*,
    in the official layout; config.json describes the tiny towers through vision_encoder.architecture."""
    from dataclasses import asdict

    from samstream.model.vision import PETextConfig, PEVisionConfig, clip_state_shapes

    vision = PEVisionConfig(image_size=16, patch_size=4, width=32, layers=2, heads=2, output_dim=48,
                            attn_pooler_heads=4)
    text = PETextConfig(context_length=4, width=16, heads=2, layers=1, output_dim=48, vocab_size=10)
    config = json.loads((parity / "config.json").read_text())
    config["vision_encoder"].update(name="PE-Core-test", batch_size=3, image_size=16,
                                    architecture={"vision": asdict(vision), "text": asdict(text)})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    state = torch.load(parity / "checkpoint.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for key, shape in clip_state_shapes(vision, text).items():
        value = torch.randn(shape, generator=generator)
        if key.endswith(("ln_pre.weight", "ln_post.weight", "ln_1.weight", "ln_2.weight", "layernorm.weight")):
            value = 1 + 0.1 * value
        elif value.dim() >= 2:
            value = value / value[0].numel() ** 0.5
        else:
            value = 0.1 * value
        state["vision_encoder.model." + key] = value
    torch.save(state, directory / "checkpoint.pt")
    return directory


@pytest.fixture(scope="session")
def vision_model_dir(tmp_path_factory, parity_dir) -> Path:
    return write_vision_checkpoint(tmp_path_factory.mktemp("vision_model"), parity_dir)


@pytest.fixture(scope="session")
def vision_model(vision_model_dir):
    from samstream.model.loading import load_sam_audio

    return load_sam_audio(vision_model_dir, progress=False).model
