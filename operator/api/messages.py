"""Every admission message of the RLRun API, in one place: the CRD's CEL rules and the pydantic validators
say the same words (the admission test checks both sides), and clients may match on them."""

from __future__ import annotations

from rlrun.operator import names

MSG_GPU_IN_RESOURCES = (
    "resources may not set nvidia.com/gpu: set trainer.gpusPerNode or inference.gpusPerReplica instead"
)
MSG_STORAGE_EXCLUSIVE = (
    "spec.storage.existingClaim and spec.storage.storageClassName are "
    "mutually exclusive: an existing claim already has its storage class"
)
MSG_TP = (
    "spec.inference.gpusPerReplica must be a multiple of "
    "spec.inference.tensorParallelSize (CPU inference, gpusPerReplica 0, needs "
    "tensorParallelSize 1): change one of them"
)
MSG_ENGINE_GPU = (
    "spec.inference.engine vllm on a cluster needs spec.inference.gpusPerReplica > 0: the runtime image "
    "installs vLLM's CUDA build (use engine rlrun for CPU pods; `rlrun local --engine vllm` runs vLLM's "
    "CPU build on this machine)"
)
MSG_PROCS = (
    "spec.trainer.processesPerNode must equal spec.trainer.gpusPerNode on GPU nodes "
    "(one rank per GPU): remove processesPerNode to get that default"
)
MSG_UPLOAD_BOTH = (
    "spec.sampleUpload.presignEndpoint and spec.sampleUpload.bucket are mutually "
    "exclusive: choose platform mode or S3 mode"
)
MSG_UPLOAD_CREDS = (
    "spec.sampleUpload.credentialsSecret is only used in S3 mode: "
    "set spec.sampleUpload.bucket or remove credentialsSecret"
)
MSG_PACKAGES_CREDS = (
    "spec.envWorkers.packages.credentialsSecret is only used with an index: "
    "set spec.envWorkers.packages.indexUrl or remove credentialsSecret"
)
MSG_BACKOFF = "spec.failurePolicy.backoffMaxSeconds must be >= spec.failurePolicy.backoffSeconds"
MSG_ENV_RESERVED = (
    "spec.env may not set " + ", ".join(names.RESERVED_ENV) + ": the operator wires those variables"
)
MSG_LABELS_RESERVED = (
    "spec.podLabels may not use the "
    + " or ".join(names.RESERVED_LABEL_PREFIXES)
    + " prefixes: the operator sets those labels"
)
MSG_MICRO_BATCH = "spec.trainer.microBatchSize must not exceed spec.orchestrator.batchSize"
MSG_NAME_LENGTH = (
    f"metadata.name must be at most {names.MAX_RUN_NAME_LENGTH} characters: child names such as "
    f"<name>{names.LONGEST_NAME_SUFFIX} must stay {names.DNS_LABEL_MAX}-character DNS labels, and the "
    f"inference StatefulSet <name>{names.SUFFIX_INFERENCE} at most {names.STATEFULSET_NAME_MAX} characters"
)
MSG_NAME_FORM = (
    "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): "
    "it names the run's Services"
)
MSG_MODEL_IMMUTABLE = (
    "spec.model cannot change once the run started (status.startTime is set): create a new RLRun"
)
MSG_RESUME_FROM_IMMUTABLE = (
    "spec.resumeFrom cannot be added, changed or removed after the RLRun is created (the fork's parent "
    "and checkpoint are fixed at admission): create a new RLRun to fork from another checkpoint"
)
MSG_TRAINER_SHAPE_IMMUTABLE = (
    "spec.trainer.nodes, gpusPerNode and processesPerNode cannot change once the run started "
    "(status.startTime is set): create a new RLRun"
)
