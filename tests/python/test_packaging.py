"""Packaging: `pip install --no-build-isolation` works offline and the
installed package (core compiled in) imports and works from anywhere; the
type stubs cover the public API."""

import ast
import os
import subprocess
import sys

import vkclient

from conftest import ROOT

PACKAGE_DIR = os.path.join(ROOT, "bindings", "python")


def test_pip_install_offline_and_import_elsewhere(env, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                    "--no-deps", "--disable-pip-version-check", "--quiet",
                    "--target", str(target), PACKAGE_DIR],
                   check=True, capture_output=True, text=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    program = (
        "import sys, vkclient\n"
        "assert vkclient.__file__.startswith(sys.argv[2]), vkclient.__file__\n"
        "c = vkclient.Client(vkclient.Config(standalone=vkclient.Standalone(sys.argv[1])))\n"
        "c.set('vkpy:pip-installed', 'works')\n"
        "import vkclient.prometheus\n"
        "assert vkclient.prometheus.__file__.startswith(sys.argv[2])\n"
        "print(c.get('vkpy:pip-installed').decode(), vkclient.__version__)\n")
    env_vars = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env_vars["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", program, env.addr, str(target)],
                         cwd=str(elsewhere), env=env_vars, check=True, capture_output=True,
                         text=True).stdout
    assert out.split() == ["works", vkclient.__version__]
    # The typing marker, every module and every stub are installed with the
    # package, as they are in the source tree.
    installed = target / "vkclient"
    source = os.path.join(PACKAGE_DIR, "vkclient")
    stubs = sorted(n for n in os.listdir(source) if n.endswith(".pyi"))
    modules = sorted(n for n in os.listdir(source) if n.endswith(".py"))
    assert "__init__.pyi" in stubs and "prometheus.py" in modules
    for name in ["py.typed"] + stubs + modules:
        assert (installed / name).is_file(), name
        with open(os.path.join(source, name), "rb") as f:
            assert (installed / name).read_bytes() == f.read(), name
    native = next(installed.glob("_native*.so"))
    linked = subprocess.run(["ldd", str(native)], check=True, capture_output=True,
                            text=True).stdout
    assert "libvkclient" not in linked  # the core is inside the extension
    # The build leaves nothing behind in the source tree.
    leftovers = [name for name in os.listdir(PACKAGE_DIR)
                 if name in ("build", "dist") or name.endswith(".egg-info")]
    assert leftovers == []
    assert not [n for n in os.listdir(os.path.join(PACKAGE_DIR, "vkclient")) if n.endswith(".so")]


def test_type_stubs_cover_the_api():
    package = os.path.dirname(os.path.abspath(vkclient.__file__))
    assert os.path.exists(os.path.join(package, "py.typed"))
    with open(os.path.join(package, "__init__.pyi")) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    assert set(vkclient.__all__) <= names
    client_stub = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Client")
    methods = {n.name for n in client_stub.body if isinstance(n, ast.FunctionDef)}
    public = {n for n in dir(vkclient.Client) if not n.startswith("_")} - {"config"}
    assert public <= methods
