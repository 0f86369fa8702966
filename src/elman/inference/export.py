"""A trained model as an ONNX file (``elman export``), checked against the model itself before it is kept.

The graphs (``torch.onnx.export(dynamo=True)``; every ``ElmanRNN`` layer and direction is one standard ONNX
``RNN`` node, so the batch and the length stay dynamic):

    classifier                 ids (B, T) int64, lengths (B,) int64 -> probabilities (B, C)
    language model             ids (B, T) int64, state (L, B, H) -> logits (B, T, V), state (L, B, H)
    conditioned language model ids (B, T) int64, conditions (B,) int64 -> logits (B, T, V), state (L, B, H),
                               from the condition's start state (each call reads a line from its start)

``ids`` are the vocabulary's indices, 0 for padding; the vocabulary, the labels (or conditions) and the
task ride along in the model's metadata (``metadata_props["elman"]``, JSON). Needs onnx, onnxscript and
onnxruntime (``pip install elman[onnx]``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from elman.errors import UsageError
from elman.files import atomic_output
from elman.inference.classifier import Classifier
from elman.inference.generator import TextGenerator

# float32 graphs run the same arithmetic in another order: measured differences are ~1e-7
TOLERANCE = 1e-5


class ClassifierGraph(nn.Module):
    def __init__(self, classifier: Classifier):
        super().__init__()
        self.model = classifier.model

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return torch.softmax(self.model(ids, lengths), dim=1)


class LanguageModelGraph(nn.Module):
    def __init__(self, generator: TextGenerator):
        super().__init__()
        self.model = generator.model

    def forward(self, ids: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(ids, state)


class ConditionedLanguageModelGraph(LanguageModelGraph):
    def forward(self, ids: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(ids, conditions=conditions)


@dataclass
class ExportReport:
    path: Path
    inputs: list[str]
    outputs: list[str]
    rnn_nodes: int
    max_difference: float  # largest |onnxruntime - eager| over the outputs of the parity check
    probe: str  # what the parity check ran

    def as_json(self) -> dict:
        return {**self.__dict__, "path": str(self.path), "tolerance": TOLERANCE}


def export_onnx(predictor: Classifier | TextGenerator, path: str | Path) -> ExportReport:
    """Write ``predictor``'s model to ``path`` as ONNX, after checking that onnxruntime computes what the model
    computes on a probe batch at another batch size and length than the traced one; refused (nothing written)
    where it does not."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401 - torch.onnx's dynamo exporter needs it
    except ImportError:
        raise UsageError("exporting needs onnx, onnxscript and onnxruntime: pip install 'elman[onnx]'") from None
    graph, example, probe, names = _graph(predictor)
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("time")
    dynamic = {name: ({0: batch, 1: steps} if name == "ids" else {0: batch} if name != "state" else {1: batch})
               for name in names}
    program = torch.onnx.export(graph.eval(), example, dynamo=True, input_names=names, dynamic_shapes=dynamic,
                                verbose=False)
    program.model.metadata_props["elman"] = json.dumps(_metadata(predictor))
    path = Path(path)
    with atomic_output(path) as temporary:
        program.save(temporary, external_data=False)
        session = onnxruntime.InferenceSession(os.fspath(temporary))
        with torch.no_grad():
            expected = graph(*probe)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, probe, strict=True)})
        difference = max(float((torch.from_numpy(a) - e).abs().max()) for a, e in zip(actual, expected, strict=True))
        if not difference <= TOLERANCE:
            raise UsageError(f"the exported graph differs from the model by {difference:.3g} (more than "
                             f"{TOLERANCE:g}) on a probe batch; nothing was written to {path}")
    rnn_nodes = sum(node.op_type == "RNN" for node in program.model.graph)
    shape = "x".join(str(size) for size in probe[0].shape)
    return ExportReport(path, names, [output.name for output in session.get_outputs()], rnn_nodes, difference,
                        f"ids {shape} (traced at {'x'.join(str(s) for s in example[0].shape)})")


def _graph(predictor: Classifier | TextGenerator) -> tuple[nn.Module, tuple, tuple, list[str]]:
    """(the module to export, its example inputs, probe inputs of other sizes, input names)."""
    generator = torch.Generator().manual_seed(0)
    vocabulary = len(predictor.vocabulary)

    def ids_and_lengths(batch: int, steps: int) -> tuple[Tensor, Tensor]:
        lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
        lengths[0] = steps
        ids = torch.randint(1, vocabulary, (batch, steps), generator=generator)
        return ids.masked_fill(torch.arange(steps) >= lengths[:, None], 0), lengths

    if isinstance(predictor, Classifier):
        return ClassifierGraph(predictor), ids_and_lengths(4, 9), ids_and_lengths(7, 13), ["ids", "lengths"]
    model = predictor.model
    if model.conditions is not None:
        def example(batch, steps):
            return (ids_and_lengths(batch, steps)[0],
                    torch.randint(0, model.config.num_conditions, (batch,), generator=generator))

        return ConditionedLanguageModelGraph(predictor), example(4, 9), example(7, 13), ["ids", "conditions"]

    def example(batch, steps):
        state = torch.randn(model.config.num_layers, batch, model.config.hidden_size, generator=generator)
        return torch.randint(1, vocabulary, (batch, steps), generator=generator), state.tanh()

    return LanguageModelGraph(predictor), example(4, 9), example(7, 13), ["ids", "state"]


def _metadata(predictor: Classifier | TextGenerator) -> dict:
    from elman import __version__

    metadata = {"elman": __version__, "vocabulary": predictor.vocabulary.to_json()}
    if isinstance(predictor, Classifier):
        return {**metadata, "task": "classify", "labels": list(predictor.labels), "max_length": predictor.max_length}
    return {**metadata, "task": "lm", "kind": predictor.kind, "conditions": predictor.conditions}
