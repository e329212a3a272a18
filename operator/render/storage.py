"""The run volume `<run>-assets` (RWX, mounted at /data everywhere) unless spec names a claim."""

from __future__ import annotations

from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import Manifest, metadata


def render_storage(run: RLRun) -> list[Manifest]:
    storage = run.spec.storage
    if storage.existing_claim or run.spec.resume_from:  # a fork shares its parent's volume
        return []
    spec = {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(run, names.SUFFIX_ASSETS, names.COMPONENT_STORAGE),
            "spec": spec,
        }
    ]
