"""Builds the vkclient extension for pip (see pyproject.toml).

The extension vkclient._native is compiled from:
  - the SWIG wrapper, generated here from swig/vkclient.i (never committed),
  - the hand-written half of the binding (bindings/python/src/*.c),
  - the core itself (core/src/<layer>/*.c), so nothing else needs installing;
and linked against the system libraries the core uses (found with
pkg-config): hiredis, OpenSSL, libcurl, cJSON.

This file lives two levels below the repository root and reads the core
from there: install from a checkout, `pip install --no-build-isolation
./bindings/python` (pip builds local directories in place).
"""

import atexit
import glob
import os
import shutil
import subprocess
import tempfile

from setuptools import Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext
from setuptools.command.egg_info import egg_info

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORE_INCLUDE = os.path.join(ROOT, "core", "include")
CORE_SRC = os.path.join(ROOT, "core", "src")
BINDING_SRC = os.path.join(HERE, "src")
INTERFACE = os.path.join(ROOT, "swig", "vkclient.i")
SYSTEM_LIBRARIES = ["hiredis", "openssl", "libcurl", "libcjson"]


def pkg_config(*args):
    return subprocess.run(["pkg-config", *args, *SYSTEM_LIBRARIES], check=True,
                          capture_output=True, text=True).stdout.split()


def find_swig():
    for name in ("swig4.0", "swig"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("SWIG 4 is needed to build vkclient (Debian package: swig)")


# A fresh directory per build: setuptools does not track header changes,
# so reusing objects from an earlier build could mix two versions of the core.
BUILD_BASE = tempfile.mkdtemp(prefix="vkclient-python-build-")
atexit.register(shutil.rmtree, BUILD_BASE, True)


class BuildOutOfTree(build):
    """Keeps build products out of the source tree."""

    def initialize_options(self):
        super().initialize_options()
        self.build_base = BUILD_BASE


class EggInfoOutOfTree(egg_info):
    """Keeps the metadata directory out of the source tree too."""

    def initialize_options(self):
        super().initialize_options()
        os.makedirs(BUILD_BASE, exist_ok=True)
        self.egg_base = os.path.relpath(BUILD_BASE, HERE)


class BuildWithSwig(build_ext):
    """Generates the SWIG wrapper before compiling."""

    def build_extension(self, ext):
        os.makedirs(self.build_temp, exist_ok=True)
        wrapper = os.path.join(self.build_temp, "vkclient_python_wrap.c")
        subprocess.run([find_swig(), "-python", "-I" + CORE_INCLUDE, "-I" + BINDING_SRC,
                        "-outdir", self.build_temp, "-o", wrapper, INTERFACE], check=True)
        # The sources are named here, not in setup(): setuptools' metadata
        # step refuses paths outside this directory.
        ext.sources = ([wrapper] + sorted(glob.glob(os.path.join(BINDING_SRC, "*.c")))
                       + sorted(glob.glob(os.path.join(CORE_SRC, "*", "*.c"))))
        super().build_extension(ext)


cflags = [f for f in pkg_config("--cflags") if not f.startswith("-I")]
include_dirs = [CORE_INCLUDE, CORE_SRC, BINDING_SRC] + [
    f[2:] for f in pkg_config("--cflags") if f.startswith("-I")]
libs = pkg_config("--libs")

native = Extension(
    "vkclient._native",
    sources=[],  # filled in by BuildWithSwig
    include_dirs=include_dirs,
    define_macros=[("VK_BUILDING", None), ("_GNU_SOURCE", None)],
    extra_compile_args=["-std=c11", "-fvisibility=hidden"] + cflags,
    libraries=[f[2:] for f in libs if f.startswith("-l")] + ["pthread"],
    library_dirs=[f[2:] for f in libs if f.startswith("-L")],
)

setup(
    ext_modules=[native],
    cmdclass={"build": BuildOutOfTree, "egg_info": EggInfoOutOfTree,
              "build_ext": BuildWithSwig},
)
