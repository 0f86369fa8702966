"""ElmanRNN beside the deployment runtimes: inference time against nn.RNN exported to ONNX Runtime and OpenVINO.

Contenders (float32 unless marked): nn.RNN and ElmanRNN in eager PyTorch, ElmanRNN under bfloat16 autocast,
ONNX Runtime on the standard ONNX ``RNN`` node (the file ``elman export`` writes for an ElmanRNN) and on
nn.RNN's own dynamo export, OpenVINO on the ``RNN``-node file in float32 and in bfloat16. Same weights for
all. Each contender runs in its own process (several runtimes' thread pools in one process slow each other
down), the processes taking turns round after round, every one on ``--threads`` threads; each checks its
outputs against nn.RNN before it times anything. Points: the grid of benchmarks/layer.py (a whole sequence
per call), and two streaming cases (batch 1, one step per call with the state carried, 200 calls). Prints
milliseconds per call (median over rounds of the per-round medians) and the speed-up over nn.RNN; writes JSON.

With ``--model DIR`` (a trained language model, e.g. the README's tiny-shakespeare one), generation instead:
characters per second of ``TextGenerator.generate`` (what ``elman generate`` runs: its compiled sampling
loop, and the Python loop that runs where the loops are not compiled) against the same model exported by
``elman export`` and sampled from Python in ONNX Runtime, one character per call, batch 1.

    pip install -e '.[bench]'
    python benchmarks/deploy.py [--rounds 3] [--repeats 15] [--threads 2] [--model runs/shakespeare]
                                [--json benchmarks/results/deploy.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = [(64, 20, 100, 64), (64, 20, 100, 256), (32, 64, 64, 512), (128, 50, 128, 128), (1, 200, 64, 128),
        (8, 100, 32, 64)]  # (batch, time, input, hidden), as benchmarks/layer.py
STREAMING = [(1, 200, 64, 128), (1, 200, 64, 512)]  # batch 1, 200 calls of one step each
CONTENDERS = ["nn.RNN", "ElmanRNN", "ElmanRNN bf16", "ORT (RNN node)", "ORT (nn.RNN export)", "OpenVINO f32",
              "OpenVINO bf16"]
TOLERANCE = {"ElmanRNN bf16": 5e-2, "OpenVINO bf16": 5e-2}  # bfloat16 GEMMs; float32 contenders: 1e-4


# --- one contender, in its own process -------------------------------------------------------------------


def networks(point: tuple[int, int, int, int]):
    import torch
    from torch import nn

    from elman import ElmanRNN

    batch, steps, inputs, hidden = point
    torch.manual_seed(0)
    reference = nn.RNN(inputs, hidden).eval()
    ours = ElmanRNN(inputs, hidden).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(steps, batch, inputs)
    h0 = torch.zeros(1, batch, hidden)
    return reference, ours, x, h0


def onnx_file(module, x, h0, directory: str, name: str) -> str:
    import torch

    path = str(Path(directory) / f"{name}.onnx")
    steps, batch = torch.export.Dim("steps"), torch.export.Dim("batch")
    program = torch.onnx.export(module, (x, h0), dynamo=True, verbose=False,
                                dynamic_shapes=({0: steps, 1: batch}, {1: batch}))
    program.save(path)
    return path


def runner(contender: str, point, directory: str, streaming: bool):
    """A function ``run(x, h0) -> (out, h_n)`` as numpy arrays or tensors, for this contender and point (for
    streaming, x is one step: nn.RNN's export fixes the number of steps it was traced with)."""
    import torch

    reference, ours, x, h0 = networks(point)
    if contender == "nn.RNN":
        return lambda x, h: reference(x, h)
    def run(x, h):  # one step per call: ElmanRNN.step, the streaming API
        return (None, ours.step(x[0], h)) if x.shape[0] == 1 else ours(x, h)

    if contender.startswith("ElmanRNN"):  # bf16: measure() runs it under autocast
        return run
    source = ours if contender != "ORT (nn.RNN export)" else reference
    name = "".join(c for c in contender if c.isalnum())
    path = onnx_file(source, x[:1] if streaming else x, h0, directory, name)
    if contender.startswith("ORT"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda x, h: session.run(None, {names[0]: x, names[1]: h})
    import openvino

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
              "INFERENCE_PRECISION_HINT": "bf16" if contender.endswith("bf16") else "f32"}
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()

    def infer(x, h):
        result = request.infer([x, h], share_inputs=True)  # outputs copied: h is fed back in
        return result[0], result[1]
    return infer


def as_tensor(value):
    import torch

    return value.detach() if isinstance(value, torch.Tensor) else torch.from_numpy(value)


WARM_UP_SECONDS = 0.5  # a fresh process's first ~40 calls of a shape ran up to 1.2x slower (allocator, threads)


def timed(run, steps: list, h0, repeats: int) -> tuple[float, object]:
    """Median seconds of running ``steps`` in turn from ``h0``, each call taking the state the last gave,
    after passes that warm up for WARM_UP_SECONDS (at least three); and the final state."""
    def one_pass():
        began, h = time.perf_counter(), h0
        for step in steps:
            _, h = run(step, h)
        return time.perf_counter() - began, h

    warm_up_began, passes = time.perf_counter(), 0
    while passes < 3 or time.perf_counter() - warm_up_began < WARM_UP_SECONDS:
        one_pass()
        passes += 1
    times, h = zip(*(one_pass() for _ in range(repeats)), strict=True)
    return statistics.median(times), h[-1]


def measure(contender: str, threads: int, repeats: int) -> dict:
    """ms per call at every point, after checking the outputs against nn.RNN."""
    import torch

    torch.set_num_threads(threads)
    results = {}
    # entered once around a pass, as a user streaming under autocast would (entering costs ~5 us)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=contender == "ElmanRNN bf16")
    with tempfile.TemporaryDirectory() as directory, torch.inference_mode():
        for kind, points in (("sequence", GRID), ("streaming", STREAMING)):
            for point in points:
                reference, _, x, h0 = networks(point)
                run = runner(contender, point, directory, kind == "streaming")
                numpy_inputs = not contender.startswith(("nn.RNN", "ElmanRNN"))
                feed = (lambda a: a.numpy()) if numpy_inputs else (lambda a: a)
                expected_out, expected_h = reference(x, h0)
                error = 0.0
                if kind == "sequence":  # the outputs of every step; streaming: the final state, below
                    with autocast:
                        error = float((as_tensor(run(feed(x), feed(h0))[0]) - expected_out).abs().max())
                # a sequence: the whole of x in one call; streaming: one call per step, the state carried
                steps = [feed(x)] if kind == "sequence" else [feed(x[t : t + 1]) for t in range(x.shape[0])]
                with autocast:
                    seconds, h_n = timed(run, steps, feed(h0), repeats)
                error = max(error, float((as_tensor(h_n) - expected_h).abs().max()))
                if error > TOLERANCE.get(contender, 1e-4):
                    raise SystemExit(f"{contender} at {point}: outputs differ from nn.RNN's by {error:.2e}")
                results[f"{kind} {point}"] = {"ms": 1e3 * seconds, "max_difference": error}
    return results


GENERATORS = ["elman generate", "elman, Python loop", "ORT sampling loop"]
GENERATED = 400  # characters per sample, after the prime "ROMEO:"


def generation_rate(contender: str, model: str, threads: int, repeats: int) -> dict:
    """Characters per second of sampling ``GENERATED`` characters at temperature 0.8, batch 1."""
    import numpy as np
    import torch

    import elman
    from elman.inference.export import export_onnx

    torch.set_num_threads(threads)
    generator = elman.load(model)
    if contender.startswith("elman"):
        if contender == "elman, Python loop":
            generator._samples_compiled = lambda state: False

        def sample(seed: int) -> str:
            return generator.generate("ROMEO:", GENERATED, 0.8, seed=seed)[0]
    else:
        import onnxruntime

        directory = tempfile.mkdtemp()
        export_onnx(generator, Path(directory) / "lm.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(Path(directory) / "lm.onnx"), options,
                                               providers=["CPUExecutionProvider"])
        config = generator.model.config
        vocabulary = generator.vocabulary

        def sample(seed: int) -> str:
            rng = np.random.default_rng(seed)
            ids = np.array([vocabulary.indices("ROMEO:")], dtype=np.int64)
            state = np.zeros((config.num_layers, 1, config.hidden_size), dtype=np.float32)
            chosen = []
            for _ in range(GENERATED):
                logits, state = session.run(None, {"ids": ids, "state": state})
                scaled = logits[0, -1].astype(np.float64) / 0.8
                probabilities = np.exp(scaled - scaled.max())
                probabilities[:4] = 0.0  # padding, unknown, start and end of line are never sampled in a text
                next_id = int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))
                chosen.append(next_id)
                ids = np.array([[next_id]], dtype=np.int64)
            return "ROMEO:" + "".join(vocabulary.tokens[i] for i in chosen)
    sample(0)
    times = []
    for seed in range(repeats):
        began = time.perf_counter()
        text = sample(seed)
        times.append(time.perf_counter() - began)
    assert len(text) == len("ROMEO:") + GENERATED, len(text)
    return {"chars_per_second": GENERATED / statistics.median(times)}


# --- the rounds ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, of " + ", ".join(
        CONTENDERS))
    parser.add_argument("--model", help="a trained language model's directory: time generation instead")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/deploy.json"))
    args = parser.parse_args()
    if args.worker in GENERATORS:
        print(json.dumps(generation_rate(args.worker, args.model, args.threads, args.repeats)))
        return
    if args.worker:
        print(json.dumps(measure(args.worker, args.threads, args.repeats)))
        return
    if args.model:
        time_generation(args)
        return
    contenders = args.contenders.split(",")
    rounds: dict[str, list[dict]] = {c: [] for c in contenders}
    for number in range(1, args.rounds + 1):
        for contender in contenders:  # taking turns: the machine's slow phases fall on all of them
            print(f"round {number}/{args.rounds}: {contender}", file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, __file__, "--worker", contender, "--threads", str(args.threads),
                                   "--repeats", str(args.repeats)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{contender} failed:\n{done.stderr[-3000:]}")
            rounds[contender].append(json.loads(done.stdout.strip().splitlines()[-1]))
    points = list(rounds[contenders[0]][0])
    table = {c: {p: statistics.median(r[p]["ms"] for r in rounds[c]) for p in points} for c in contenders}
    width = max(len(c) for c in contenders)
    print(f"{'point (B, T, I, H)':<32} " + " ".join(f"{c:>{max(width, 14)}}" for c in contenders))
    for point in points:
        base = table.get("nn.RNN", {}).get(point)
        cells = [f"{table[c][point]:8.3f}" + (f" ({base / table[c][point]:4.2f}x)" if base else "")
                 for c in contenders]
        print(f"{point:<32} " + " ".join(f"{cell:>{max(width, 14)}}" for cell in cells))
    print(f"ms per call (streaming: 200 calls), median of {args.rounds} rounds; (x): speed-up over nn.RNN; "
          f"{args.threads} threads")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "ms": table,
                                     "per_round": rounds}, indent=2))


def time_generation(args: argparse.Namespace) -> None:
    """Both generators in turns, each in its own process; prints characters per second."""
    rates: dict[str, list[float]] = {name: [] for name in GENERATORS}
    for number in range(1, args.rounds + 1):
        for name in GENERATORS:
            print(f"round {number}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, __file__, "--worker", name, "--model", args.model, "--threads",
                                   str(args.threads), "--repeats", str(max(args.repeats // 3, 3))],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            rates[name].append(json.loads(done.stdout.strip().splitlines()[-1])["chars_per_second"])
    for name, values in rates.items():
        print(f"{name:<20} {statistics.median(values):8.0f} characters/s (batch 1, {GENERATED} characters, "
              f"median of {args.rounds} rounds)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.with_name(args.json.stem + "_generation.json").write_text(json.dumps(rates, indent=2))


if __name__ == "__main__":
    main()
