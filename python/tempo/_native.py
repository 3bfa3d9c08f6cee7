"""The C library: finding and loading libtempo, its errors as Python exceptions, its log lines
as Python logging records, and small helpers to move values across the boundary.

cffi's ABI mode (ffi.dlopen) needs no compiler at install time. Every call into the library
releases the GIL for its duration, so Python threads that generate on a shared Model run in
parallel; callbacks from C (the per-step callback, the log callback) take the GIL back while
they run.
"""
import logging
import os

import cffi

from . import _cdef

ffi = cffi.FFI()
ffi.cdef(_cdef.TYPES + _cdef.CALLBACKS + _cdef.FUNCTIONS + _cdef.LIBC)

_HERE = os.path.dirname(os.path.abspath(__file__))
# The library as the package build copies it in (setup.py), next to this file.
BUNDLED = os.path.join(_HERE, "libtempo.so.0")
# The soname: found on the standard search path (LD_LIBRARY_PATH, ldconfig's cache) after
# `make install`; the major version pins the ABI.
SONAME = "libtempo.so.0"


def _load():
    """Load libtempo from, in order: $TEMPO_LIBRARY, the copy installed with the package, the
    standard search path. Returns (library, path it came from)."""
    explicit = os.environ.get("TEMPO_LIBRARY")
    if explicit:
        # An explicit choice that fails is an error, not a reason to load some other copy.
        try:
            return ffi.dlopen(explicit), explicit
        except OSError as e:
            raise ImportError(f"tempo: cannot load TEMPO_LIBRARY={explicit}: {e}") from None
    if os.path.exists(BUNDLED):
        return ffi.dlopen(BUNDLED), BUNDLED
    try:
        return ffi.dlopen(SONAME), SONAME
    except OSError:
        raise ImportError(
            f"tempo: cannot find {SONAME}: build it (make) and set TEMPO_LIBRARY=/path/to/build/libtempo.so, "
            "install it (make install, then ldconfig), or install this package from a source checkout "
            "(pip install ./python), which bundles the library") from None


lib, library_path = _load()
libc = ffi.dlopen(None)  # the process's C library, for free()

version = ffi.string(lib.tempo_version()).decode()
if version.split(".")[:2] != _cdef.HEADER_VERSION.split(".")[:2]:
    raise ImportError(f"tempo: {library_path} is libtempo {version}, but this binding was written for "
                      f"{_cdef.HEADER_VERSION}; use the library and the package of the same version")


# ------------------------------------------------------------------------------ errors --
class TempoError(Exception):
    """An error from the library. `code` is its tempo_status (an int), `status` its name
    ("invalid argument", ...); str(e) is the library's one-line message."""

    code = None

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def status(self):
        return ffi.string(lib.tempo_status_name(self.code)).decode()


class ArgumentError(TempoError, ValueError):
    """A bad argument or option value (TEMPO_ERR_ARG)."""
    code = lib.TEMPO_ERR_ARG


class FileError(TempoError, OSError):
    """A file that cannot be opened, read or written (TEMPO_ERR_IO)."""
    code = lib.TEMPO_ERR_IO

    def __init__(self, message, code=None):  # OSError's own constructor would parse the args
        TempoError.__init__(self, message, code)

    def __str__(self):
        return self.message


class FormatError(TempoError):
    """A model, tokenizer or config file that is not valid (TEMPO_ERR_FORMAT)."""
    code = lib.TEMPO_ERR_FORMAT


class OutOfMemoryError(TempoError, MemoryError):
    """The machine refused an allocation (TEMPO_ERR_NOMEM)."""
    code = lib.TEMPO_ERR_NOMEM


class MemoryLimitError(TempoError):
    """It would pass max_memory_gb (TEMPO_ERR_MEMORY_LIMIT)."""
    code = lib.TEMPO_ERR_MEMORY_LIMIT


class CacheLimitError(TempoError):
    """It would pass max_cache_tokens or the model's context (TEMPO_ERR_CACHE_LIMIT)."""
    code = lib.TEMPO_ERR_CACHE_LIMIT


class StateError(TempoError):
    """Not valid in the object's state, e.g. step() before prefill() (TEMPO_ERR_STATE)."""
    code = lib.TEMPO_ERR_STATE


class NumericError(TempoError):
    """The model produced NaN or infinite logits (TEMPO_ERR_NUMERIC)."""
    code = lib.TEMPO_ERR_NUMERIC


class InternalError(TempoError):
    """A failure inside the library (TEMPO_ERR_INTERNAL)."""
    code = lib.TEMPO_ERR_INTERNAL


_BY_CODE = {cls.code: cls for cls in (ArgumentError, FileError, FormatError, OutOfMemoryError, MemoryLimitError,
                                      CacheLimitError, StateError, NumericError, InternalError)}


def error(err):
    """The exception for a filled tempo_error *."""
    message = ffi.string(err.message).decode("utf-8", "replace")
    return _BY_CODE.get(err.code, TempoError)(message, err.code)


# ---------------------------------------------------------------------- helpers --
def take_string(ptr):
    """A malloc'ed char * from the library as str (freed here); None for NULL."""
    if ptr == ffi.NULL:
        return None
    try:
        return ffi.string(ptr).decode("utf-8", "replace")
    finally:
        libc.free(ptr)


def string(ptr):
    """A borrowed const char * as str; None for NULL."""
    return None if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")


def struct_dict(ptr):
    """The struct a pointer from ffi.new points to, as a dict of its (number) fields."""
    return {name: getattr(ptr, name) for name, _ in ffi.typeof(ptr).item.fields}


# ---------------------------------------------------------------------- logging --
# The library's log lines go to the "tempo" logger: warnings (memory at 85% of the limit) reach
# stderr through logging's default handler, debug lines (debug_mode) only where configured.
logger = logging.getLogger("tempo")
_LEVELS = {lib.TEMPO_LOG_ERROR: logging.ERROR, lib.TEMPO_LOG_WARN: logging.WARNING,
           lib.TEMPO_LOG_INFO: logging.INFO, lib.TEMPO_LOG_DEBUG: logging.DEBUG}


@ffi.callback("tempo_log_fn")
def _log_to_logging(level, text, user):
    # An exception must not escape into C; a broken handler is logging's concern.
    try:
        logger.log(_LEVELS.get(level, logging.INFO), "%s", ffi.string(text).decode("utf-8", "replace"))
    except Exception:  # pragma: no cover
        pass


lib.tempo_log_set(_log_to_logging, ffi.NULL)  # process-wide; the callback object lives as long as the module
