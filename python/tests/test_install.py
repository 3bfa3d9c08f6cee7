"""Installing the package offline, as the README says, and where it loads libtempo from."""
import os
import subprocess
import sys

from conftest import MODEL, ROOT


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TEMPO_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH")}
    env.update(extra)
    return env


def test_pip_install_offline_in_a_venv(tmp_path):
    """`pip install ./python` in a venv made with --system-site-packages (Debian's cffi,
    setuptools and wheel are seen from it), with --no-index so that nothing can be downloaded
    (pip's isolated build included: the backend requires nothing): the package builds, bundles libtempo, and generates from outside the
    checkout with no TEMPO_LIBRARY set."""
    venv = tmp_path / "venv"
    # Debian's python3, not another python first on PATH: the one with python3-cffi.
    # --without-pip: the venv uses Debian's pip from the system site (the same pip 23).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-cache-dir", "-q",
                        "./python"], cwd=ROOT, env=_env(PIP_NO_INPUT="1"), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import tempo, json\n"
            "m = tempo.Model(%r, threads=1)\n"
            "r = m.generate('Once upon a time', max_tokens=6, max_parallel_tokens=1)\n"
            "print(tempo.library_path); print(tempo.__file__); print(r['clean_text'])\n" % MODEL)
    r = subprocess.run([py, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib, pkg, text = r.stdout.splitlines()
    site = str(venv / "lib")
    assert pkg.startswith(site) and lib.startswith(site) and lib.endswith("tempo/libtempo.so.0")
    assert text == "Once upon a time, there was a little g"  # 6 steps of subword tokens


def test_tempo_library_names_the_library(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import tempo"], cwd=tmp_path, capture_output=True, text=True,
                       env=_env(PYTHONPATH=os.path.join(ROOT, "python"), TEMPO_LIBRARY="/nonexistent/libtempo.so"))
    assert r.returncode != 0
    assert "tempo: cannot load TEMPO_LIBRARY=/nonexistent/libtempo.so" in r.stderr.splitlines()[-1]
