"""Model and generate(): the record, callbacks, options and errors, on stories260K."""
import json
import logging
import os
import subprocess

import pytest

import tempo
from conftest import MODEL, ROOT, comparable

PRUNING = dict(max_tokens=16, selection_threshold=0.05, max_parallel_tokens=4, use_retroactive_pruning=True)


def test_record_is_the_cli_output_json(model):
    """generate() returns the document `tempo --output-json` prints, key for key and value for
    value (timings aside), pruning fields included."""
    cli = os.environ.get("TEMPO_RELEASE_BIN", os.path.join(ROOT, "build", "tempo"))
    out = subprocess.run([cli, "--model", MODEL, "--threads", "2", "--max-tokens", "16", "--selection-threshold", "0.05",
                          "--max-parallel-tokens", "4", "--use-retroactive-pruning", "--output-json"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    record = model.generate("Once upon a time", **PRUNING)
    assert comparable(record) == comparable(json.loads(out))
    assert record["stop_reason"] == "max_tokens" and len(record["steps"]) == 16
    members = [t for s in record["steps"] for t in s["tokens"]]
    assert any(t["pruned"] for t in members) and any("prune_score" in t for t in members)
    assert record["config"]["model"] == MODEL and record["config"]["use_retroactive_pruning"] is True


def test_on_step_sees_each_set_as_recorded(model):
    seen = []
    record = model.generate("Once upon a time", max_tokens=12, selection_threshold=0.05, on_step=seen.append)
    assert [s.index for s in seen] == list(range(12))
    for step, rec in zip(seen, record["steps"]):
        assert step.position == rec["position"] == 5 + step.index  # 5 prompt tokens, BOS included
        assert [m.token_id for m in step.members] == [t["token_id"] for t in rec["tokens"]]
        # the record's numbers are cJSON's 15 digits: the same float32, not always the same double
        assert [m.probability for m in step.members] == pytest.approx([t["probability"] for t in rec["tokens"]],
                                                                      rel=1e-12)
        assert all(m.text == t["text"] for m, t in zip(step.members, rec["tokens"]))
    # without pruning the streamed sets are the whole text
    assert "Once upon a time" + "".join(s.text for s in seen) == record["generated_text"]
    assert any(len(s.members) > 1 for s in seen) and record["metrics"]["parallel_steps"] > 0


def test_on_prune_reports_steps_that_lost_members(model):
    pruned = []
    record = model.generate("Once upon a time", on_prune=pruned.append, **PRUNING)
    assert pruned, "these settings prune on stories260K"
    for step in pruned:
        assert any(m.pruned for m in step.members)
        assert any(t["pruned"] for t in record["steps"][step.index]["tokens"])


def test_on_step_returning_true_stops(model):
    record = model.generate("Once upon a time", max_tokens=30, on_step=lambda s: s.index == 3)
    assert record["stop_reason"] == "interrupted" and len(record["steps"]) == 4


def test_exception_in_on_step_stops_and_propagates(model):
    calls = []

    def on_step(step):
        calls.append(step.index)
        if step.index == 2:
            raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        model.generate("Once upon a time", max_tokens=30, on_step=on_step)
    assert calls == [0, 1, 2]


def test_ctrl_c_in_a_callback_stops_the_run(model):
    """KeyboardInterrupt (what Ctrl-C raises, simulated here) is stopped like any exception:
    the run ends and generate raises it."""
    import _thread
    calls = []

    def on_step(step):
        calls.append(step.index)
        if step.index == 2:
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        model.generate("Once upon a time", max_tokens=1000, selection_threshold=1.0, on_step=on_step)
    assert 3 <= len(calls) <= 4  # the interrupt lands in this step's callback or the next one


def test_cancel_event_stops_after_the_step(model):
    import threading
    ev = threading.Event()
    record = model.generate("Once upon a time", max_tokens=30, cancel=ev,
                            on_step=lambda s: ev.set() if s.index == 5 else None)
    assert record["stop_reason"] == "interrupted" and len(record["steps"]) == 6


def test_options_are_checked_by_the_library(model):
    with pytest.raises(tempo.ArgumentError) as e:
        model.generate("x", selection_threshold=1.5)
    assert str(e.value) == "--selection-threshold: 1.5 is out of range (must be in [0, 1])"
    assert e.value.code == 1 and e.value.status == "invalid argument" and isinstance(e.value, ValueError)
    with pytest.raises(tempo.ArgumentError, match="applies to --default-mode only"):
        model.generate("x", temperature=0.7)
    with pytest.raises(tempo.ArgumentError, match="--max-tokens: expected an integer, got 'true'"):
        model.generate("x", max_tokens=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'selection_treshold'"):
        model.generate("x", selection_treshold=0.1)
    with pytest.raises(TypeError, match=r"tempo.Model\(path, threads=...\)"):
        model.generate("x", threads=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'output_json'"):
        model.generate("x", output_json=True)
    # default mode samples: the seed is an option like any other
    a = model.generate("Once upon a time", max_tokens=8, default_mode=True, temperature=0.8, seed=7)
    b = model.generate("Once upon a time", max_tokens=8, default_mode=True, temperature=0.8, seed=7)
    assert a["generated_text"] == b["generated_text"] and all(len(s["tokens"]) == 1 for s in a["steps"])
    assert {o["key"] for o in tempo.options()} >= {"selection_threshold", "max_tokens", "memory_policy"}
    with pytest.raises(TypeError, match="option values are bool, int, float or str, not list"):
        model.generate("x", max_tokens=[3])
    with pytest.raises(TypeError, match="the prompt is a str"):
        model.generate(["Once"])


def test_model_errors_are_typed(tmp_path):
    with pytest.raises(tempo.FileError) as e:
        tempo.Model("/nonexistent/model.gguf")
    assert "/nonexistent/model.gguf" in str(e.value) and isinstance(e.value, OSError)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(tempo.FormatError, match="bad.gguf"):
        tempo.Model(bad)
    with pytest.raises(tempo.MemoryLimitError, match="max-memory-gb|max_memory_gb"):
        tempo.Model(MODEL, max_memory_gb=0.0005)
    with pytest.raises(tempo.ArgumentError, match="'f8' is not one of f32, f16, q8_0"):
        tempo.Model(MODEL, kv_cache_type="f8")
    with pytest.raises(tempo.ArgumentError, match="'tpu' is not one of auto, cpu, gpu, gpu:N"):
        tempo.Model(MODEL, device="tpu")


def test_model_device_options():
    # the compute device is the model's: the CPU here, asked for by name; a session cannot change it
    with tempo.Model(MODEL, device="cpu", gpu_layers=3, threads=1) as m:
        assert m.info.device == "cpu" and m.info.gpu_layers == 0
        record = m.generate("Once upon a time", max_tokens=3)
        assert record["config"]["device"] == "cpu" and record["metrics"]["device"] == "cpu"
        assert m.memory()["has_gpu"] is False
        with pytest.raises(TypeError, match="fixed when the model is opened"):
            m.generate("Once upon a time", device="gpu")


def test_limits(model):
    # the prompt plus max_tokens past the context: refused before anything runs
    with pytest.raises(tempo.CacheLimitError, match="2048"):
        model.generate("Once upon a time", max_tokens=2044)
    # a cache limit reached during the run keeps what was produced
    record = model.generate("Once upon a time", max_tokens=40, max_cache_tokens=12, max_parallel_tokens=2)
    assert record["stop_reason"] == "cache_limit" and 0 < len(record["steps"]) < 40 and record["stop_message"]


def test_model_info_tokenizer_memory(model):
    assert model.info.arch == "llama" and model.info.n_vocab == 512 and model.info.n_layers == 5
    assert model.info.kv_cache_type == "f32" and model.info.threads == 2 and model.info.path == MODEL
    assert model.tokenize("Once upon a time") == [1, 403, 407, 261, 378]
    assert model.tokenize("Once upon a time", add_bos=False) == [403, 407, 261, 378]
    assert model.detokenize([403, 407, 261, 378]).strip() == "Once upon a time"
    with pytest.raises(tempo.ArgumentError, match="outside the vocabulary"):
        model.detokenize([5000])
    before = model.memory()
    assert before["weights_gb"] > 0 and before["sessions"] == 0 and before["process_rss_gb"] > 0
    with model.session(max_tokens=4) as s:
        s.prefill("Once upon a time")
        during = model.memory()
        assert during["sessions"] == 1 and during["kv_gb"] > 0
    assert model.memory()["sessions"] == 0


def test_library_log_lines_reach_logging(model, caplog):
    with caplog.at_level(logging.DEBUG, logger="tempo"):
        model.generate("Once upon a time", max_tokens=3, debug_mode=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "tempo"]
    assert any(line.startswith("Memory") or "Memory:" in line for line in lines), lines


def test_closed_model_refuses_calls():
    m = tempo.Model(MODEL, threads=1)
    s = m.session(max_tokens=3)
    m.close()  # closes the session first
    with pytest.raises(tempo.StateError, match="the model is closed"):
        m.generate("x")
    with pytest.raises(tempo.StateError, match="the session is closed"):
        s.prefill("x")
    m.close()  # twice is fine


def test_chat_template(model):
    hi = [{"role": "user", "content": "Hi"}]
    assert model.apply_chat_template(hi, template="chatml") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(tempo.ArgumentError, match="unknown chat template 'nope' \\(one of: llama3, "):
        model.apply_chat_template(hi, template="nope")
