"""Only computes the package list: folders operator/ and runtime/ install as rlrun.operator and rlrun.runtime.

Every package is found, never listed by hand: a non-editable install (the images) ships only what this list
names (tests/integration/ship/test_package.py checks it against the tracked folders).
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["rlrun", "rlrun.*"]),
        *(f"rlrun.{p}" for p in find_packages(include=["operator", "operator.*", "runtime", "runtime.*"])),
    ]
)
