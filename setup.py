"""Packaging for syncpb.

``adapters/`` and ``tls/`` live at the top of the repository but install as
``syncpb.adapters`` and ``syncpb.tls`` so that no global ``adapters`` or
``tls`` name is claimed.
"""

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """build_ext compiling the extensions side by side, one job per CPU,
    unless ``-j``/``--parallel`` says otherwise: the compiled parts are
    independent C files, and a fresh clone's ``make test`` builds them all."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


# Optional compiled parts: each has a pure-Python path it is tested against,
# so a machine without a C compiler still installs (setuptools prints the
# failure and goes on).
EXTENSIONS = [
    Extension("syncpb.tls._records", ["tls/_records.c"], optional=True),
    Extension("syncpb._heap", ["syncpb/_heap.c"], optional=True),
]


def codec_extensions() -> list:
    """The compiled codec, syncpb/_c*.pyx, through Cython (a build
    requirement in pyproject.toml). Each module is optional: without Cython
    or a compiler syncpb installs and runs its pure-Python codec."""
    sources = sorted(glob.glob("syncpb/_c*.pyx"))
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("note: Cython is not installed: the compiled codec is not built; "
              "syncpb will use its pure-Python codec", file=sys.stderr)
        return []
    modules = [Extension(f"syncpb.{os.path.basename(source)[:-4]}", [source], optional=True)
               for source in sources]
    built = cythonize(modules, language_level=3, quiet=True, nthreads=os.cpu_count() or 1,
                      compiler_directives={"boundscheck": False, "wraparound": False,
                                           "cdivision": True})
    for extension in built:  # cythonize's copies drop the flag
        extension.optional = True
    return built

setup(
    name="syncpb",
    version="0.1.0.dev0",
    description="Twisted's Perspective Broker for blocking, threaded and gevent code",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["syncpb", "syncpb.adapters", "syncpb.tls", "syncpb.cli"],
    package_dir={
        "syncpb": "syncpb",
        "syncpb.adapters": "adapters",
        "syncpb.tls": "tls",
    },
    package_data={"syncpb": ["py.typed", "*.pyx", "*.pxd"]},
    ext_modules=EXTENSIONS + codec_extensions(),
    cmdclass={"build_ext": ParallelBuildExt},
    entry_points={"console_scripts": ["syncpb = syncpb.cli:run"]},
    install_requires=[
        "gevent>=23.9",
        "pyopenssl>=23.2",
        "cryptography>=41",
        "service-identity>=24.1",
    ],
    extras_require={
        "test": [
            "pytest>=7.4",
            "pytest-timeout>=2.2",
            "hypothesis>=6.90",
            "twisted>=24.3",
            "psycopg[binary]>=3.1",
            "mypy>=2.4", "types-gevent>=26.9", "types-greenlet>=3.5",  # make typecheck
            "matplotlib>=3.7",  # tests/test_bench_chart.py draws the benchmark chart
            "build>=1.0", "Cython>=3.0",  # tests/test_packaging.py builds the sdist and wheel
        ],
        "bench": [
            "twisted>=24.3",
            "Pyro5>=5.15",
            "msgpack>=1.0",
            "psycopg[binary]>=3.1",
            "matplotlib>=3.7",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Twisted",
        "Topic :: System :: Networking",
    ],
)
