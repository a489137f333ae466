"""Builds and installs the kvtier Python package with pip, from a kvtier source checkout.

    python3 -m pip install --no-build-isolation --no-deps bindings/python

works offline with Debian's python3-pip, python3-setuptools, python3-wheel and pybind11-dev
(--no-build-isolation: use those instead of fetching setuptools from PyPI; --no-deps: NumPy is
Debian's python3-numpy). The extension `kvtier._kvtier` is built by the project's own CMake
(target kvtier_python, bindings/python/CMakeLists.txt), so it is the same module ctest tests;
the pure-Python modules are kvtier/*.py beside this file.

Environment:
  KVTIER_BUILD_DIR  an existing CMake build tree of this checkout (configured with this
                    interpreter; a relative path is taken from the checkout's root) to build
                    the extension in; without it, a fresh tree under setuptools' build
                    directory, configured with only what the package needs.
  CMAKE_ARGS        more -D options for that fresh tree (for example -DKVTIER_CUDA=OFF).
  CMAKE_BUILD_PARALLEL_LEVEL, CMAKE_CXX_COMPILER_LAUNCHER (ccache) are CMake's own.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE.parents[1]  # bindings/python -> the checkout


def project_version():
    """The version in the top-level CMakeLists.txt's project() call: one version, one place."""
    cmakelists = SOURCE_DIR / "CMakeLists.txt"
    match = re.search(r"project\(\s*kvtier\s+VERSION\s+([0-9.]+)",
                      cmakelists.read_text() if cmakelists.is_file() else "")
    if not match:
        sys.exit(f"kvtier setup.py: no project(kvtier VERSION ...) in {cmakelists}; "
                 "run it from a kvtier checkout (bindings/python)")
    return match.group(1)


class CMakeBuild(build_ext):
    """Builds kvtier._kvtier with CMake and copies it where setuptools expects it."""

    def build_extension(self, ext):
        build_dir = os.environ.get("KVTIER_BUILD_DIR")
        if build_dir:
            build_dir = (SOURCE_DIR / build_dir).resolve()  # an absolute path stays as it is
            if not (build_dir / "CMakeCache.txt").is_file():
                sys.exit(f"kvtier setup.py: KVTIER_BUILD_DIR={build_dir} is not a configured "
                         "CMake build tree")
        else:
            build_dir = Path(self.build_temp).resolve() / "cmake"
            configure = [
                "cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir),
                f"-DPython3_EXECUTABLE={sys.executable}", "-DKVTIER_BUILD_PYTHON=ON",
                "-DKVTIER_BUILD_TESTS=OFF", "-DKVTIER_BUILD_BENCH=OFF",
                "-DKVTIER_BUILD_EXAMPLES=OFF", "-DKVTIER_BUILD_TOOLS=OFF",
            ]
            if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
                configure += ["-G", "Ninja"]
            configure += shlex.split(os.environ.get("CMAKE_ARGS", ""))
            subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "kvtier_python"],
                       check=True)

        # The module's file name carries the interpreter's ABI tag, as pybind11 names it.
        built = build_dir / "bindings" / "python" / "kvtier" / (
            "_kvtier" + sysconfig.get_config_var("EXT_SUFFIX"))
        if not built.is_file():
            found = sorted(p.name for p in built.parent.glob("_kvtier*"))
            sys.exit(f"kvtier setup.py: {built} was not built (found: {found or 'nothing'}); "
                     f"was {build_dir} configured for another interpreter than "
                     f"{sys.executable}, or without pybind11-dev / python3-dev / "
                     "python3-numpy?")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target)


setup(
    version=project_version(),
    packages=["kvtier"],
    ext_modules=[Extension("kvtier._kvtier", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
