"""The package's build backend: setuptools, as the installing Python already has it.

pip builds a package in a fresh environment and first installs the backend's requirements there,
which means downloading setuptools and wheel. This backend requires nothing: it adds the
interpreter's own site-packages (Debian's python3-setuptools and python3-wheel) back to the path
and hands every hook to setuptools, so `pip install ./python` works offline. With
--no-build-isolation pip skips the fresh environment and this changes nothing.
"""
import site
import sys

for _p in site.getsitepackages():
    if _p not in sys.path:
        sys.path.append(_p)  # after the build environment's own paths

from setuptools import build_meta as _setuptools  # noqa: E402
from setuptools.build_meta import *  # noqa: E402,F401,F403


def get_requires_for_build_wheel(config_settings=None):
    return []  # wheel, which older setuptools asks for, comes from the same site-packages


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


build_wheel = _setuptools.build_wheel
