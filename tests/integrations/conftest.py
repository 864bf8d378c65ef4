import importlib.util
from pathlib import Path

import pytest

# A script run in its own process by a test (its memory must be its own), not a test module.
collect_ignore = ["trainer_run.py"]


@pytest.fixture(scope="session")
def byte_chunks():
    """`byte_chunks(seq_len)`: a byte-level language-modelling data set of real text."""
    path = Path(__file__).with_name("trainer_run.py")
    spec = importlib.util.spec_from_file_location("trainer_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda seq_len: module.ByteChunks(module.stdlib_text(), seq_len)
