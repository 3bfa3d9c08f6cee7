"""tempo: TEMPO generation for Llama-family models, from Python (a binding of libtempo).

    import tempo

    with tempo.Model("stories260K.gguf", max_memory_gb=4) as model:
        # One call: the same record as `tempo --output-json`, as Python objects.
        record = model.generate("Once upon a time", selection_threshold=0.1, max_tokens=20,
                                on_step=lambda step: print(step.text, end="", flush=True))
        print(record["clean_text"])

        # Step by step: look at each set, continue from the member you pick.
        with model.session(max_tokens=20) as s:
            s.prefill("Once upon a time")
            for step in s:
                if len(step.members) > 1:
                    s.choose(step.members[-1])

Options are the command line's and the YAML file's, by their key names (`--selection-threshold`
is `selection_threshold=`), checked by the library: a bad value raises tempo.ArgumentError with
the library's message, an unknown name TypeError. Errors are tempo.TempoError subclasses that
carry the library's status code.

Threads: a Model is immutable and shared; any number of Python threads may generate on it at
once, and they run in parallel (every call into the library releases the GIL). A Session is used
by one thread at a time (its methods wait for each other), except cancel(), which any thread may
call while another steps.
"""
import contextlib
import dataclasses
import json
import numbers
import os
import threading
import weakref
from typing import Optional, Tuple

from . import _native
from ._native import (ArgumentError, CacheLimitError, FileError, FormatError, InternalError, MemoryLimitError,
                      NumericError, OutOfMemoryError, StateError, TempoError, ffi, lib)

__version__ = "0.4.0"
library_version = _native.version  # the loaded libtempo's version
library_path = _native.library_path  # where it was loaded from

__all__ = ["Model", "Session", "Step", "Member", "PruneEvent", "ModelInfo", "options", "TempoError",
           "ArgumentError", "FileError", "FormatError", "OutOfMemoryError", "MemoryLimitError", "CacheLimitError",
           "StateError", "NumericError", "InternalError", "library_version", "library_path"]


# ---------------------------------------------------------------------------------- options --
def options():
    """The library's option table: one dict per option (key, type, help, default, range), the
    options of the command line and the YAML file."""
    n = ffi.new("int *")
    table = lib.tempo_options(n)
    types = {lib.TEMPO_OPT_BOOL: "bool", lib.TEMPO_OPT_INT: "int", lib.TEMPO_OPT_FLOAT: "float",
             lib.TEMPO_OPT_STRING: "str"}
    return [{"key": _native.string(o.key), "type": types[o.type], "help": _native.string(o.help),
             "default": _native.string(getattr(o, "def")),  # a Python keyword as a field name
             "range": _native.string(o.range)} for o in (table[i] for i in range(n[0]))]


# Options fixed when the model is opened; the rest of the table but the CLI's own (what to run,
# how to print) are the generation's, so an option the library adds reaches Python by itself.
_MODEL_OPTIONS = frozenset({"threads", "max_memory_gb", "kv_cache_type", "kv_offload", "device", "gpu_layers"})
_CLI_OPTIONS = frozenset({"model", "prompt", "output_json", "output_dir", "no_color", "show_token_ids"})
_GEN_OPTIONS = frozenset(o["key"] for o in options()) - _MODEL_OPTIONS - _CLI_OPTIONS


def _option_text(value):
    """An option value as the text tempo_config_set parses (the library checks it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):  # numpy's integers too
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # the shortest text that reads back as the same double
    raise TypeError(f"option values are bool, int, float or str, not {type(value).__name__}")


class _Config:
    """A tempo_config filled from keyword options through tempo_config_set, so values are checked
    (and their errors worded) by the library exactly as on the command line."""

    def __init__(self, caller, options, allowed):
        self.c = ffi.new("tempo_config *")
        lib.tempo_config_init(self.c)
        self._free = weakref.finalize(self, lib.tempo_config_free, self.c)
        for key, value in options.items():
            if key not in allowed:
                if key in _MODEL_OPTIONS:
                    raise TypeError(f"{caller}: {key} is fixed when the model is opened: tempo.Model(path, {key}=...)")
                raise TypeError(f"{caller} got an unexpected keyword argument '{key}'")
            if value is not None:  # None: the library's default
                self.set(key, value)

    def set(self, key, value):
        err = ffi.new("tempo_error *")
        if lib.tempo_config_set(self.c, key.encode(), _option_text(value).encode(), err):
            raise _native.error(err)

    def validate(self):
        err = ffi.new("tempo_error *")
        if lib.tempo_config_validate(self.c, err):
            raise _native.error(err)

    def record(self, result):
        """The --output-json document of a tempo_result *, as Python objects (frees result)."""
        try:
            text = _native.take_string(lib.tempo_result_to_json(result, self.c))
        finally:
            lib.tempo_result_free(result)
        if text is None:
            raise OutOfMemoryError("out of memory writing the JSON record")
        return json.loads(text)


# ---------------------------------------------------------------------------- step objects --
@dataclasses.dataclass(frozen=True)
class Member:
    """One token of a step's set, in selection order (most probable first)."""
    index: int                       # position in the set: what Session.choose takes
    token_id: int
    text: str                        # as shown: invalid UTF-8 bytes as <0xNN> (a token may hold part of a character)
    bytes: bytes                     # the token's bytes as the tokenizer decodes them
    probability: float               # selection probability p_{k,j}
    pruned: bool
    pruned_at_step: Optional[int]    # the step whose pass pruned it
    prune_score: Optional[float]     # the latest pruning score it received
    scored_at_step: Optional[int]


@dataclasses.dataclass(frozen=True)
class PruneEvent:
    """One pruning decision: member `member` of step `step` scored `score` in the pass run after
    step `at_step`'s set was fed; `pruned` when that pass removed it."""
    step: int
    member: int
    at_step: int
    token_id: int
    score: float
    pruned: bool


@dataclasses.dataclass(frozen=True)
class Step:
    """A step's set as it was when read (a snapshot: later pruning shows in Session.steps and the
    record, not here)."""
    index: int
    position: int                    # the RoPE position every member shares
    members: Tuple[Member, ...]
    was_pruned: bool
    chosen: bool                     # replaced by a chosen member (Session.choose / set_members)
    text: str                        # the member, or [a/b/c] over the members not pruned
    pruning: Tuple[PruneEvent, ...] = ()  # Session.step: the decisions of the pass that fed the previous set

    @classmethod
    def _read(cls, st, pruning=()):
        members = []
        for j in range(st.n_tokens):
            t = st.tokens[j]
            has_text = t.text != ffi.NULL
            members.append(Member(index=j, token_id=t.token_id,
                                  text=_native.take_string(lib.tempo_token_display(t.text)) if has_text else "",
                                  bytes=ffi.string(t.text) if has_text else b"", probability=t.probability, pruned=bool(t.pruned),
                                  pruned_at_step=t.pruned_at_step if t.pruned else None,
                                  prune_score=t.prune_score if t.scored_at_step >= 0 else None,
                                  scored_at_step=t.scored_at_step if t.scored_at_step >= 0 else None))
        return cls(index=st.step, position=st.position, members=tuple(members), was_pruned=bool(st.was_pruned),
                   chosen=bool(st.chosen), text=_native.take_string(lib.tempo_step_text(st, False, False)) or "",
                   pruning=tuple(pruning))


def _prune_events(info):
    return [PruneEvent(step=e.step, member=e.member, at_step=e.at_step, token_id=e.token_id, score=e.score,
                       pruned=bool(e.pruned)) for e in (info.prune[i] for i in range(info.n_prune))]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    n_vocab: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    n_ctx: int
    arch: str
    tokenizer: str                   # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    weight_bytes: int
    path: str
    threads: int                     # worker threads of each session
    max_memory_gb: float
    kv_cache_type: str               # "f32", "f16" or "q8_0"
    device: str                      # "cpu" or "gpu:N <device name>"
    gpu_layers: int                  # layers whose weights are on the GPU (0 on the CPU)


# ------------------------------------------------------------------------- object lifetimes --
# The C objects live in small state objects that the Python wrappers' finalizers close, so
# they are freed whatever order the garbage collector (or interpreter exit) finds them in:
# every session of a model before the model.
class _ModelState:
    def __init__(self, handle):
        self.handle = handle
        self.cond = threading.Condition()
        self.ops = {}                # thread id -> calls in progress (generate, session creation, ...)
        self.sessions = set()        # live _SessionStates

    @contextlib.contextmanager
    def use(self):
        me = threading.get_ident()
        with self.cond:
            if self.handle is None:
                raise StateError("the model is closed", lib.TEMPO_ERR_STATE)
            self.ops[me] = self.ops.get(me, 0) + 1
        try:
            yield self.handle
        finally:
            with self.cond:
                self.ops[me] -= 1
                if not self.ops[me]:
                    del self.ops[me]
                self.cond.notify_all()

    def close(self):
        with self.cond:
            if self.handle is None:
                return
            if threading.get_ident() in self.ops:
                raise StateError("the model cannot be closed from inside one of its own calls (an on_step callback)",
                                 lib.TEMPO_ERR_STATE)
            handle, self.handle = self.handle, None  # no new calls from here on
            self.cond.wait_for(lambda: not self.ops)  # the calls in progress end
            sessions, self.sessions = list(self.sessions), set()
        for s in sessions:
            s.close()
        lib.tempo_model_close(handle)


class _SessionState:
    def __init__(self, handle, model):
        self.handle = handle
        self.model = model
        self.lock = threading.Lock()         # one call at a time, as the C API requires
        self.cancel_lock = threading.Lock()  # cancel() must not wait for a step, only for close()

    @contextlib.contextmanager
    def use(self):
        with self.lock:
            if self.handle is None:
                raise StateError("the session is closed", lib.TEMPO_ERR_STATE)
            yield self.handle

    def cancel(self):
        with self.cancel_lock:
            if self.handle is not None:
                lib.tempo_session_cancel(self.handle)

    def close(self):
        with self.lock, self.cancel_lock:
            handle, self.handle = self.handle, None
        if handle is not None:
            lib.tempo_session_free(handle)
            with self.model.cond:
                self.model.sessions.discard(self)


# ----------------------------------------------------------------------------------- model --
class Model:
    """A loaded model (GGUF file or Hugging Face folder) with one memory budget,
    max_memory_gb, for its weights and every live session. Share it between threads."""

    def __init__(self, path, *, max_memory_gb=None, threads=None, kv_cache_type=None, kv_offload=None, device=None,
                 gpu_layers=None, gpu_adapt=False):
        """device: "auto" (default: a hardware GPU if there is one), "cpu", "gpu" or "gpu:N"; gpu_layers:
        offload the first N layers (default all); gpu_adapt: offload fewer layers when the weights
        do not fit the GPU instead of failing (README "Running on a GPU")."""
        self.path = os.fsdecode(path)
        cfg = _Config("Model()", {"max_memory_gb": max_memory_gb, "threads": threads, "kv_cache_type": kv_cache_type,
                                  "kv_offload": kv_offload, "device": device, "gpu_layers": gpu_layers}, _MODEL_OPTIONS)
        cfg.c.model_params.gpu_adapt = bool(gpu_adapt)
        err = ffi.new("tempo_error *")
        handle = lib.tempo_model_open(os.fsencode(path), ffi.addressof(cfg.c, "model_params"), err)
        if handle == ffi.NULL:
            raise _native.error(err)
        self._state = _ModelState(handle)
        self._close = weakref.finalize(self, self._state.close)
        i = ffi.new("tempo_model_info *")
        lib.tempo_model_get_info(handle, i)
        kv = {lib.TEMPO_KV_F32: "f32", lib.TEMPO_KV_F16: "f16", lib.TEMPO_KV_Q8_0: "q8_0"}
        self.info = ModelInfo(n_vocab=i.n_vocab, dim=i.dim, n_layers=i.n_layers, n_heads=i.n_heads,
                              n_kv_heads=i.n_kv_heads, head_dim=i.head_dim, ffn_dim=i.ffn_dim, n_ctx=i.n_ctx,
                              arch=_native.string(i.arch), tokenizer=_native.string(i.tokenizer),
                              weight_bytes=i.weight_bytes, path=_native.string(i.path), threads=i.threads,
                              max_memory_gb=i.max_memory_gb, kv_cache_type=kv[i.kv_cache_type],
                              device=_native.string(i.device), gpu_layers=i.gpu_layers)

    def close(self):
        """Free the model, after closing its sessions and waiting for calls in progress."""
        self._state.close()
        self._close.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"tempo.Model({self.path!r}, {self.info.arch}, {self.info.n_layers} layers)"

    # -- generation --
    def generate(self, prompt, *, on_step=None, on_prune=None, cancel=None, **options):
        """Run TEMPO generation on `prompt` and return the record `tempo --output-json` prints
        (a dict: prompt, generated_text, clean_text, steps, config, metrics, stop_reason, ...).

        on_step(step): called with each new set (a Step) as soon as it exists; return True to
        stop. on_prune(step): called with an earlier step when a pruning pass removed some of
        its members. cancel: an object with is_set() (threading.Event) checked after each step.
        An exception raised in a callback stops the run and is raised here.

        A run stopped by a limit (max_memory_gb, max_cache_tokens) returns the record of what
        was produced, with stop_reason "memory_limit" / "cache_limit"; a failure during the run
        raises TempoError with the partial record in its `record` attribute."""
        if not isinstance(prompt, str):
            raise TypeError(f"generate(): the prompt is a str, not {type(prompt).__name__}")
        cfg = _Config("generate()", options, _GEN_OPTIONS)
        cfg.set("model", self.path)
        cfg.set("prompt", prompt)
        cfg.set("output_json", True)  # the record is the one --output-json prints
        cfg.validate()
        raised = []

        def forward_events(event, step, user):
            # Runs on this thread with the GIL held (cffi takes it back for the callback).
            try:
                if event == lib.TEMPO_EVENT_STEP and on_step is not None and on_step(Step._read(step)):
                    return 1
                if event == lib.TEMPO_EVENT_PRUNE and on_prune is not None and on_prune(Step._read(step)):
                    return 1
                return 1 if cancel is not None and cancel.is_set() else 0
            except BaseException as e:  # KeyboardInterrupt too: Ctrl-C stops the run at the next step
                raised.append(e)
                return 1

        callback = ffi.callback("tempo_step_cb", forward_events)
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            result = lib.tempo_generate(handle, prompt.encode(), ffi.addressof(cfg.c, "gen"), callback, ffi.NULL,
                                        ffi.NULL, err)
        if result == ffi.NULL:
            raise _native.error(err)
        record = cfg.record(result)
        if raised:
            raise raised[0]
        if record["stop_reason"] == "error":
            # The record of a failed run is kept; err says what failed (NumericError for NaN logits).
            e = _native.error(err) if err.code != lib.TEMPO_OK else InternalError(
                record.get("stop_message") or "the generation failed", lib.TEMPO_ERR_INTERNAL)
            e.record = record
            raise e
        return record

    def session(self, **options):
        """A Session for one generation, step by step (same options as generate)."""
        return Session(self, **options)

    # -- tokenizer --
    def tokenize(self, text, add_bos=True):
        """Token ids of text (with the tokenizer's BOS first when add_bos)."""
        data = text.encode()
        cap = len(data) + 8
        with self._state.use() as handle:
            while True:
                out = ffi.new("int32_t[]", cap)
                n = lib.tempo_tokenize(handle, data, add_bos, out, cap)
                if n < 0:
                    raise ArgumentError(f"cannot tokenize {text!r}")
                if n <= cap:
                    return list(out[0:n])
                cap = n

    def detokenize(self, ids):
        """The text of token ids (special tokens rendered; bytes that are not UTF-8 as U+FFFD)."""
        ids = list(ids)
        arr = ffi.new("int32_t[]", ids)
        with self._state.use() as handle:
            text = _native.take_string(lib.tempo_detokenize(handle, arr, len(ids)))
        if text is None:
            bad = [i for i in ids if not 0 <= i < self.info.n_vocab]
            if bad:
                raise ArgumentError(f"a token id is outside the vocabulary (0..{self.info.n_vocab - 1}): {bad}")
            raise MemoryError("tempo: out of memory detokenizing")
        return text

    def apply_chat_template(self, messages, template=None, add_generation_prompt=True):
        """The conversation [{"role": ..., "content": ...}, ...] as one prompt in the model's chat
        format (or the named format), ending where the assistant's reply begins."""
        keep = []  # the C strings live until the call returns
        msgs = ffi.new("tempo_chat_message[]", len(messages))
        for i, m in enumerate(messages):
            role, content = ffi.new("char[]", m["role"].encode()), ffi.new("char[]", m["content"].encode())
            keep += [role, content]
            msgs[i].role, msgs[i].content = role, content
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            text = _native.take_string(lib.tempo_chat_apply(handle, template.encode() if template else ffi.NULL, msgs,
                                                            len(messages), add_generation_prompt, err))
        if text is None:
            raise _native.error(err)
        return text

    # -- memory --
    def memory(self):
        """The memory monitor's figures (GB): system, process, and what the budget accounts for
        the weights and every live session (kv_gb, work_gb, sessions)."""
        stats = ffi.new("tempo_memory_stats *")
        with self._state.use() as handle:
            lib.tempo_memory_get_stats(lib.tempo_model_memory(handle), stats)
        return _native.struct_dict(stats)


# --------------------------------------------------------------------------------- session --
class Session:
    """One generation, one step at a time: prefill(prompt), then step() until it returns None.
    Between steps, choose() or set_members() replace the newest set before it is fed."""

    def __init__(self, model, **options):
        self.model = model  # keeps the model open while the session lives
        self._cfg = _Config("session()", options, _GEN_OPTIONS)
        self._cfg.set("model", model.path)
        self._cfg.set("output_json", True)
        self._cfg.validate()
        err = ffi.new("tempo_error *")
        with model._state.use() as mh:
            handle = lib.tempo_session_new(mh, ffi.addressof(self._cfg.c, "gen"), err)
            if handle == ffi.NULL:
                raise _native.error(err)
            self._state = _SessionState(handle, model._state)
            with model._state.cond:
                model._state.sessions.add(self._state)
        self._close = weakref.finalize(self, self._state.close)
        self.pruning = []  # the decisions of the latest step() call (also the final one, which returns None)

    def close(self):
        """Free the session (waits for a step in progress)."""
        self._state.close()
        self._close.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, fn, *args):
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            rc = fn(handle, *args, err)
        if rc < 0:
            raise _native.error(err)
        return rc

    def prefill(self, prompt):
        """Feed the prompt: text (wrapped in the chat format with enable_thinking), or token ids
        (fed as they are: no BOS is added)."""
        if isinstance(prompt, str):
            self._cfg.set("prompt", prompt)
            self._call(lib.tempo_session_prefill, prompt.encode())
        else:
            ids = list(prompt)
            self._cfg.set("prompt", self.model.detokenize(ids))
            self._call(lib.tempo_session_prefill_tokens, ffi.new("int32_t[]", ids), len(ids))

    def step(self):
        """One TEMPO step: feed the previous set, prune, select the next set. Returns the new set
        as a Step (its `pruning` lists the decisions the feed caused), or None when the
        generation is over (stop_reason says why)."""
        info = ffi.new("tempo_step_info *")
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            rc = lib.tempo_session_step(handle, info, err)
            if rc < 0:
                raise _native.error(err)
            self.pruning = _prune_events(info)
            return Step._read(info.step, self.pruning) if rc == 1 else None

    def __iter__(self):
        """The steps until the generation is over."""
        while True:
            step = self.step()
            if step is None:
                return
            yield step

    def _newest(self, handle):
        return Step._read(lib.tempo_session_get_step(handle, lib.tempo_session_n_steps(handle) - 1))

    def choose(self, member):
        """Continue from one member of the newest set (a Member or its index): it replaces the
        set, as if it had been selected alone. Returns the updated Step."""
        index = member.index if isinstance(member, Member) else member
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            if lib.tempo_session_choose(handle, index, err):
                raise _native.error(err)
            return self._newest(handle)

    def set_members(self, ids):
        """Replace the newest set by these token ids (ints or Members), in this order: replays a
        path recorded elsewhere. Returns the updated Step."""
        ids = [m.token_id if isinstance(m, Member) else m for m in ids]
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            if lib.tempo_session_set_members(handle, ffi.new("int32_t[]", ids), len(ids), err):
                raise _native.error(err)
            return self._newest(handle)

    def cancel(self):
        """Stop the generation: the next step() returns None with stop_reason "interrupted".
        Safe from any thread, also while another thread is inside step()."""
        self._state.cancel()

    def top_logprobs(self, k=5):
        """The k most probable tokens of the distribution the newest set was selected from, as
        (token_id, log-probability) pairs, most probable first."""
        if k < 1:
            raise ArgumentError(f"top_logprobs: k must be at least 1, got {k}", lib.TEMPO_ERR_ARG)
        ids, lps = ffi.new("int32_t[]", k), ffi.new("float[]", k)
        with self._state.use() as handle:
            n = lib.tempo_session_top_logprobs(handle, k, ids, lps)
        if n < 0:
            raise StateError("there is no distribution before the first step", lib.TEMPO_ERR_STATE)
        return [(ids[i], lps[i]) for i in range(n)]

    @property
    def steps(self):
        """Every step so far, as it is now (members pruned since are marked)."""
        with self._state.use() as handle:
            return [Step._read(lib.tempo_session_get_step(handle, k)) for k in range(lib.tempo_session_n_steps(handle))]

    def _stop(self):
        msg = ffi.new("char **")
        with self._state.use() as handle:
            why = lib.tempo_session_stop_reason(handle, msg)
        return (None if why == lib.TEMPO_STOP_NONE else _native.string(lib.tempo_stop_reason_name(why)),
                _native.string(msg[0]))

    @property
    def stop_reason(self):
        """None while running, then "max_tokens", "eos", "memory_limit", "cache_limit", "error"
        or "interrupted"."""
        return self._stop()[0]

    @property
    def stop_message(self):
        """The limit's or error's message, or None."""
        return self._stop()[1]

    def stats(self):
        """Counters: prompt tokens, steps, fed tokens, forward calls, times, KV slots, width."""
        out = ffi.new("tempo_session_stats *")
        with self._state.use() as handle:
            lib.tempo_session_get_stats(handle, out)
        return _native.struct_dict(out)

    def result(self):
        """The record so far: the same document generate() returns."""
        err = ffi.new("tempo_error *")
        with self._state.use() as handle:
            r = lib.tempo_session_result(handle, err)
        if r == ffi.NULL:
            raise _native.error(err)
        return self._cfg.record(r)
