import json
from pathlib import Path

import pytest
import torch

from fixtures.checkpoints import write_streaming_vision_checkpoint, write_vision_checkpoint

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


@pytest.fixture(scope="session")
def vision_model_dir(tmp_path_factory, parity_dir) -> Path:
    """The parity model plus a tiny random PE-Core (vision_encoder.model.*): its codec runs at 200 Hz."""
    return write_vision_checkpoint(tmp_path_factory.mktemp("vision_model"), parity_dir)


@pytest.fixture(scope="session")
def streaming_vision_model_dir(tmp_path_factory) -> Path:
    """A tiny random SAM Audio with a 16 kHz codec and a tiny PE-Core: streaming sessions can run it."""
    return write_streaming_vision_checkpoint(tmp_path_factory.mktemp("streaming_vision_model"))


@pytest.fixture(scope="session")
def vision_model(vision_model_dir):
    from samstream.model.loading import load_sam_audio

    return load_sam_audio(vision_model_dir, progress=False).model
