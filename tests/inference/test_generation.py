"""Generation's compiled sampling loop (``generate`` in _loops.cpp) draws, for a seed, exactly what the Python
loop (``TextGenerator._sample``) draws: the same characters to the last one, for every way of sampling."""

import pytest
import torch

from elman.data.vocabulary import EOS, Vocabulary
from elman.inference import TextGenerator
from elman.layer import fused
from elman.models.language_model import LanguageModel, LanguageModelConfig

pytestmark = pytest.mark.skipif(fused.compiled_generate is None, reason="the compiled loops are not built")

VOCABULARY = Vocabulary.from_texts(["abcdefghijklmnopqrstuvwxyz .,\n"])


def generator_of(kind: str, num_layers: int = 2, num_conditions: int = 0, dtype=torch.float32) -> TextGenerator:
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(len(VOCABULARY), embedding_dim=8, hidden_size=24, num_layers=num_layers,
                                              num_conditions=num_conditions)).to(dtype)
    with torch.no_grad():  # a confident model, so that the cuts of top_k and top_p act on distinct logits
        model.output.weight.mul_(8)
        model.output.bias[VOCABULARY.index(EOS)] += 4  # lines that end, some before the length limit
    conditions = [f"c{i}" for i in range(num_conditions)] if num_conditions else None
    return TextGenerator(model, VOCABULARY, kind, conditions, max_length=30, config={})


def both_loops(generator: TextGenerator, monkeypatch, **options) -> tuple[list[str], list[str]]:
    """generate(**options) through the compiled loop, then through the Python loop."""
    calls = []
    compiled_loop = TextGenerator._sample_compiled
    monkeypatch.setattr(TextGenerator, "_sample_compiled",
                        lambda *args: calls.append(1) or compiled_loop(*args))
    compiled = generator.generate(**options)
    assert calls, "the compiled loop did not run"
    monkeypatch.setattr(TextGenerator, "_samples_compiled", lambda self, state: False)
    return compiled, generator.generate(**options)


SAMPLING = [
    {"temperature": 1.0},
    {"temperature": 0},
    {"temperature": 0.7, "top_k": 3},
    {"temperature": 1.5, "top_p": 0.6},
    {"temperature": 2, "top_k": 5, "top_p": 0.9},
    {"temperature": 1.0, "top_k": 1000},  # more than the vocabulary: no cut
]


@pytest.mark.parametrize("sampling", SAMPLING)
def test_a_long_text_model_draws_the_same_characters(sampling, monkeypatch):
    compiled, python = both_loops(generator_of("text"), monkeypatch, prime="the ", length=300, num_samples=3,
                                  seed=11, **sampling)
    assert compiled == python
    assert all(len(text) == 304 for text in compiled)


@pytest.mark.parametrize("sampling", SAMPLING[:4])
def test_a_conditioned_line_model_draws_the_same_names_and_stops_at_their_end(sampling, monkeypatch):
    generator = generator_of("lines", num_layers=1, num_conditions=3)
    compiled, python = both_loops(generator, monkeypatch, num_samples=40, seed=5, condition="c1", **sampling)
    assert compiled == python
    if sampling["temperature"]:
        lengths = {len(name) for name in compiled}
        assert len(lengths) > 1 and max(lengths) < 30  # each ended, at its own length


def test_a_float64_model_draws_the_same_characters(monkeypatch):
    compiled, python = both_loops(generator_of("text", dtype=torch.float64), monkeypatch, prime="a", length=100,
                                  seed=2)
    assert compiled == python


def test_a_model_in_training_mode_samples_in_python():
    generator = generator_of("text")
    generator.model.train()
    state = torch.zeros(2, 1, 24)
    with torch.no_grad():  # as in generate
        assert not generator._samples_compiled(state)
        generator.model.eval()
        assert generator._samples_compiled(state)


def test_other_threads_run_while_a_text_is_drawn():
    """The compiled loop lets go of the GIL (a server answers other requests meanwhile)."""
    import threading
    import time

    generator = generator_of("text")
    ticks = []
    drawing = threading.Event()

    def tick():
        drawing.wait()
        while drawing.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    drawing.set()
    began = time.perf_counter()
    generator.generate("a", length=20_000, seed=0)
    ended = time.perf_counter()
    drawing.clear()
    ticker.join()
    during = [t for t in ticks if began < t < ended]
    assert len(during) > 10, f"{len(during)} ticks in {ended - began:.2f} s of drawing"
