"""Bundles libtempo into the package when it is built from a source checkout.

`pip install ./python` runs this in the checkout (pip builds in place):
`make build/libtempo.so` in the repository above (nothing to do when it is up to date), then the
shared library is copied in as tempo/libtempo.so.0, where the loader looks after $TEMPO_LIBRARY.
TEMPO_BUNDLE=0 skips it (a distribution that ships libtempo.so.0 on the search path).
Everything else is in pyproject.toml.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUNDLE = os.environ.get("TEMPO_BUNDLE", "1") != "0" and os.path.exists(os.path.join(REPO, "include", "tempo.h"))


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        if not BUNDLE:
            return
        subprocess.run(["make", "-C", REPO, "--no-print-directory", "build/libtempo.so"], check=True)
        # The real file behind the symlinks: build/libtempo.so -> libtempo.so.<version>.
        real = os.path.realpath(os.path.join(REPO, "build", "libtempo.so"))
        target = os.path.join(self.build_lib, "tempo", "libtempo.so.0")
        shutil.copyfile(real, target)
        os.chmod(target, 0o755)


class BinaryDistribution(Distribution):
    # A wheel with a compiled library in it is platform-specific, not "py3-none-any".
    def has_ext_modules(self):
        return BUNDLE


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
