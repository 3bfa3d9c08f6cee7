"""Python threads sharing one Model."""
import sys
import threading
import time

from conftest import comparable

PROMPTS = ("Once upon a time", "The little dog")
OPTS = dict(max_tokens=40, selection_threshold=0.05, max_parallel_tokens=4, use_retroactive_pruning=True)


def test_two_threads_generate_on_one_model_as_they_would_alone(model):
    alone = [comparable(model.generate(p, **OPTS)) for p in PROMPTS]
    assert alone[0]["generated_text"] != alone[1]["generated_text"]
    barrier = threading.Barrier(2)
    results, errors = [None, None], []

    def run(i):
        try:
            barrier.wait()
            results[i] = comparable(model.generate(PROMPTS[i], **OPTS))
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == alone


def test_calls_into_the_library_release_the_gil(model):
    """While one thread is inside a C call (a long prefill), another thread runs Python code.
    With a long switch interval Python never takes the GIL from a thread by force, so the
    other thread runs during the call only if the call itself let go of the GIL."""
    prompt = "Once upon a time there was a little dog. " * 25  # ~280 tokens
    spins, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            spins[0] += 1
            time.sleep(0)  # hand the GIL back at once, so the main thread never waits for it

    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    t = threading.Thread(target=spin)
    t.start()
    try:
        with model.session(max_tokens=2) as s:
            time.sleep(0.01)
            before = spins[0]
            s.prefill(prompt)
            during = spins[0] - before
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    # held through the call this is 0 (checked with ctypes.PyDLL, which keeps the GIL)
    assert during >= 10, f"the other thread ran {during} times during the prefill"
