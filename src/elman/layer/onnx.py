"""ONNX translations of the ``elman::`` operators, for ``torch.onnx.export(..., dynamo=True)``.

``elman::rnn_direction`` becomes ONNX's standard ``RNN`` operator, one node per layer and direction:

    RNN(X = input (or Gather(table, rows)), W = [W_ih], R = [W_hh], B = [b_ih ++ b_hh],
        sequence_lens = lengths, initial_h = [h0]; activations = [Tanh | Relu | Sigmoid],
        direction = forward | reverse, hidden_size = H)  ->  Y (T, 1, B, H), Y_h (1, B, H)

so the exported graph keeps the sequence length and the batch dynamic, and runs in any ONNX runtime
(``nn.RNN``'s own dynamo export unrolls its loop into T steps fixed at the traced length). ONNX's reverse
direction starts each sequence at its own last valid step, as ours does, and its outputs past a length are
0, as ours are.

Importing this module registers the translations in onnxscript's table of torch operators, which
``torch.onnx.export`` reads; ``ops.py`` imports it when an ``elman::`` operator is traced for export, so
nobody has to pass ``custom_translation_table``. It needs onnxscript (``pip install elman[onnx]``).
"""

from __future__ import annotations

from onnxscript import INT32
from onnxscript.function_libs.torch_lib.registration import torch_op
from onnxscript.onnx_opset import opset18 as op

ONNX_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


@torch_op("elman::rnn_direction", trace_only=True)
def rnn_direction(input, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, rows=None,
                  nonlinearity: str = "tanh", reverse: bool = False, mixed: bool = False):
    """elman::rnn_direction as ONNX RNN; ``mixed`` (bfloat16 GEMMs under autocast) has no ONNX counterpart
    and is dropped: the graph computes in float32."""
    if rows is not None:
        input = op.Gather(input, rows, axis=0)
    bias = None if bias_ih is None else op.Unsqueeze(op.Concat(bias_ih, bias_hh, axis=0), [0])
    sequence_lens = None if lengths is None else op.Cast(lengths, to=INT32.dtype)
    output, h_n = op.RNN(
        input, op.Unsqueeze(weight_ih, [0]), op.Unsqueeze(weight_hh, [0]), bias, sequence_lens, op.Unsqueeze(h0, [0]),
        activations=[ONNX_ACTIVATIONS[nonlinearity]], direction="reverse" if reverse else "forward",
        hidden_size=int(weight_hh.shape[0]),
    )
    return op.Squeeze(output, [1]), op.Squeeze(h_n, [0])
