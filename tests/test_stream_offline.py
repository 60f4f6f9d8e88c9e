"""Streaming equals the default model's offline separation (the LL resampler on both paths, the residual
formed at the client's rate): bit for bit at 16 and 48 kHz; and a server says how the model took a text
prompt. Through a real server and `samstream stream` on a loaded machine: tests/test_stream_pacing.py.

References are computed here from the model itself: nothing about the model's latency or outputs is assumed."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.signals import tonal_mixture
from test_ws_protocol import url

from samstream.stream.processor import Prompt
from samstream.stream.regimes.block_causal import BlockCausalProcessor
from samstream.stream.server.app import SeparationServer
from samstream.stream.server.ops import ServerConfig
from samstream.stream.session import StreamSession

PROMPTS = ("a person talking", "dog barking")  # the speech expert's branch and the general separator's


@pytest.fixture(scope="module")
def default_model(one_torch_thread_module):
    from samstream.model.registry import load_separator

    return load_separator("tiny")


@pytest.fixture(scope="module")
def one_torch_thread_module():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def jittery(x: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.integers(1, 3000, size=len(x)))
    return np.split(x, cuts[cuts < len(x)])


@pytest.mark.parametrize("rate", [16000, 48000])
@pytest.mark.parametrize("text", PROMPTS)
def test_a_stream_equals_the_offline_separation_sample_for_sample(default_model, rate, text):
    x = tonal_mixture(2.0, rate, seed=rate)
    x[::5] += 0.05  # energy up to the client's Nyquist frequency: the residual must keep it
    offline = default_model.separate(x, rate, prompt=text)
    session = StreamSession(BlockCausalProcessor(default_model), rate, Prompt(text=text))
    outputs = [np.stack(session.push(frame)) for frame in jittery(x, seed=1)] + [np.stack(session.flush())]
    out = np.concatenate(outputs, axis=1)
    latency = session.latency_samples
    assert out.shape == (2, len(x) + latency)
    assert not out[:, :latency].any()  # the pre-roll is zeros, exactly
    np.testing.assert_array_equal(out[0, latency:], offline.target)
    np.testing.assert_array_equal(out[1, latency:], offline.residual)


async def test_started_says_how_the_model_took_a_text_prompt(default_model, processor):
    from samstream.clients.ws_client import SeparationClient

    texts = ("a person talking", "dog barking", "the hum of the fridge in the kitchen")  # the last one: no class
    server = SeparationServer(BlockCausalProcessor(default_model), ServerConfig(port=0), model_name="tiny")
    await server.start()
    try:
        async with await SeparationClient.connect(url(server)) as client:
            for index, text in enumerate(texts):
                if index == 0:
                    reply = await client.start(16000, text=text, format="float32")
                else:
                    reply = await client.request({"type": "prompt", "prompt": {"text": text}})
                expected = StreamSession(BlockCausalProcessor(default_model), 16000, Prompt(text=text)).understood()
                assert reply["understood"] == expected and set(expected) == {"branch", "class", "similarity", "mask_floor",
                                                                             "band_floors", "general_networks"}
            await client.flush()
    finally:
        await server.shutdown()
    server = SeparationServer(processor, ServerConfig(port=0), model_name="random")  # a model that does not say
    await server.start()
    try:
        async with await SeparationClient.connect(url(server)) as client:
            assert (await client.start(16000, text="dog barking"))["understood"] is None
    finally:
        await server.shutdown()
