"""Fixtures of the Python binding's tests (pytest, Debian's python3-pytest).

Run them with Debian's /usr/bin/python3, which has python3-cffi: `make test-python` does, after
building build/libtempo.so, which these tests load (TEMPO_LIBRARY). By hand, from the repository
root: make build/libtempo.so && /usr/bin/python3 -m pytest python/tests
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "..", "shared", "models", "stories260K.gguf")
LIBRARY = os.path.join(ROOT, "build", "libtempo.so")

try:
    import cffi  # noqa: F401
except ImportError:
    pytest.exit(f"the binding needs cffi, and {sys.executable} has none: run the tests with Debian's "
                "/usr/bin/python3 after `apt-get install python3-cffi python3-pytest` (make test-python)", returncode=2)

# The library under test is the one the tree just built, not one installed elsewhere.
os.environ.setdefault("TEMPO_LIBRARY", LIBRARY)
if not os.path.exists(os.environ["TEMPO_LIBRARY"]):
    pytest.exit(f"{os.environ['TEMPO_LIBRARY']} does not exist: run `make build/libtempo.so` first", returncode=2)
sys.path.insert(0, os.path.join(ROOT, "python"))

import tempo  # noqa: E402

# Metrics that measure the run (time, the process's peak memory) rather than describe it.
# ("memory": the breakdown by layer holds the monitor's totals, which count the process and every
# live session at the time the record was taken)
TIMING = ("generation_time_s", "steps_per_second", "peak_memory_bytes", "memory")


def comparable(record):
    """The record without its timing metrics: what two runs of the same thing share."""
    out = dict(record)
    out["metrics"] = {k: v for k, v in record["metrics"].items() if k not in TIMING}
    return out


@pytest.fixture(scope="session")
def model():
    with tempo.Model(MODEL, threads=2) as m:
        yield m
