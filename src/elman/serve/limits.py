"""What one request to the service may ask for; ``elman serve --max-*`` sets each (a light module: the
command line reads the defaults without importing the web framework)."""

from dataclasses import dataclass


@dataclass
class Limits:
    max_texts: int = 256  # texts per /v1/predict request
    max_chars: int = 1_000  # characters per text, prime or inspected text
    max_body_bytes: int = 1 << 20  # request body
    max_generate_length: int = 2_000  # characters sampled per sample
    max_samples: int = 16  # samples per /v1/generate request
