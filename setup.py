"""Build hook: ``cli.py`` sits at the top of the source tree but installs as ``semhash.cli``.

Everything else is declared in ``pyproject.toml``; setuptools can map packages to
folders (``index/`` -> ``semhash.index``) but not a single module, hence this hook.
"""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "semhash":
            modules.append((package, "cli", "cli.py"))
        return modules


setup(cmdclass={"build_py": BuildPy})
