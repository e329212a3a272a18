"""Only computes the package list: folders operator/ and runtime/ install as rlrun.operator and rlrun.runtime."""

from setuptools import find_packages, setup

setup(packages=["rlrun", *(f"rlrun.{p}" for p in find_packages(include=["operator*", "runtime*"]))])
