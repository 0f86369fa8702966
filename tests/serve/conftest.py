import socket
import threading
import time

import pytest
import uvicorn

from elman.serve import Limits, create_app, load_models

LIMITS = Limits(max_texts=5, max_chars=50, max_body_bytes=2_000, max_generate_length=100, max_samples=3)


@pytest.fixture(scope="session")
def limits():
    return LIMITS


@pytest.fixture(scope="session")
def server(trained_model, trained_lm, conditioned_lm, generative_model):
    """The service on a free port of 127.0.0.1, in a thread of this process, with small limits."""
    models = load_models([f"names={trained_model[0]}", f"story={trained_lm[0]}", f"names_lm={conditioned_lm[0]}",
                          f"explained={generative_model[0]}"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(models, LIMITS), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
