"""The `<run>-config` ConfigMap: the runtime config (one JSON file) every pod mounts at /etc/rlrun."""

from __future__ import annotations

from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import Manifest, metadata, runtime_config_json


def render_config(run: RLRun) -> list[Manifest]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(run, names.SUFFIX_CONFIG, names.COMPONENT_CONFIG),
            "data": {names.CONFIG_KEY: runtime_config_json(run)},
        }
    ]
