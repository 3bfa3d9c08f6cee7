"""The binding's copy of the declarations (tempo/_cdef.py) against include/tempo.h.

A C file includes the real header, re-declares every function and callback type of the copy
(a C compiler refuses a redeclaration with another type), and asserts with _Static_assert
that each struct cffi laid out from the copy has the compiler's size, alignment, field
offsets and field types, and each enum constant its value. It is only compiled
(-fsyntax-only): nothing runs.
"""
import os
import pathlib
import re
import subprocess

from conftest import ROOT
from tempo import _cdef
from tempo._native import ffi


def _field_check(struct, name, ftype):
    """A static assert that field `name` of `struct` has the type cffi gives it."""
    member = f"((({struct} *)0)->{name})"
    if ftype.kind == "pointer" and ftype.item.kind != "void":
        # cffi drops const from pointed-to types (const char * is 'char *'); compare what is
        # pointed to, whose top-level qualifiers the builtin ignores
        return f"__builtin_types_compatible_p(__typeof__(*{member}), {ftype.item.cname})"
    return f"__builtin_types_compatible_p(__typeof__({member}), {ftype.cname})"


def check_source():
    lines = ['#include <stddef.h>', '#include "tempo.h"', _cdef.CALLBACKS, _cdef.FUNCTIONS]
    for name, value in re.findall(r"#define (\w+) (\d+)", _cdef.TYPES):
        lines.append(f'_Static_assert({name} == {value}, "{name}");')
    typedefs, _, _ = ffi.list_types()
    checked = 0
    for name in typedefs:
        t = ffi.typeof(name)
        if t.kind == "struct" and t.fields is not None:  # opaque ones (tempo_model) have no layout
            lines.append(f'_Static_assert(sizeof({name}) == {ffi.sizeof(t)}, "size of {name}");')
            lines.append(f'_Static_assert(_Alignof({name}) == {ffi.alignof(t)}, "alignment of {name}");')
            for fname, f in t.fields:
                lines.append(f'_Static_assert(offsetof({name}, {fname}) == {f.offset}, "offset of {name}.{fname}");')
                lines.append(f'_Static_assert({_field_check(name, fname, f.type)}, "type of {name}.{fname}");')
            checked += 1
        elif t.kind == "enum":
            lines.append(f'_Static_assert(sizeof({name}) == {ffi.sizeof(t)}, "size of {name}");')
            for value, const in t.elements.items():
                lines.append(f'_Static_assert({const} == {value}, "{name}: {const}");')
            checked += 1
    return "\n".join(lines) + "\n", checked


def test_declarations_match_the_header(tmp_path):
    source, checked = check_source()
    assert checked >= 20  # every struct and enum of the copy, not a vacuous pass
    c = tmp_path / "check.c"
    c.write_text(source)
    r = subprocess.run(["cc", "-std=c11", "-fsyntax-only", "-Wall", "-Werror", "-I", os.path.join(ROOT, "include"),
                        str(c)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_drifted_declaration_is_caught(tmp_path):
    """The check itself: a copy with one field of another type, and one function with another
    argument, do not compile."""
    source, _ = check_source()
    for old, new in ((_cdef.FUNCTIONS, _cdef.FUNCTIONS.replace("int tempo_session_choose(tempo_session *s, int member",
                                                                 "int tempo_session_choose(tempo_session *s, long member")),
                     ("(((tempo_token *)0)->probability)), float)", "(((tempo_token *)0)->probability)), double)"),
                     ("offsetof(tempo_step, tokens) == 16", "offsetof(tempo_step, tokens) == 12")):
        assert old in source and old != new
        c = tmp_path / "drift.c"
        c.write_text(source.replace(old, new))
        r = subprocess.run(["cc", "-std=c11", "-fsyntax-only", "-I", os.path.join(ROOT, "include"), str(c)],
                           capture_output=True, text=True)
        assert r.returncode != 0, new


def test_versions_agree():
    import tempo
    header = pathlib.Path(ROOT, "include", "tempo.h").read_text()
    version = re.search(r'#define TEMPO_VERSION "([^"]+)"', header).group(1)
    pyproject = pathlib.Path(ROOT, "python", "pyproject.toml").read_text()
    assert _cdef.HEADER_VERSION == version == tempo.__version__ == tempo.library_version
    assert f'version = "{version}"' in pyproject
