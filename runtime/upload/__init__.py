"""Sample logging: parquet written one rollout at a time with re-inlined images, streamed to object storage.

The orchestrator uses `SampleLogger`; the pieces are exported for tests and benchmarks.
"""

from rlrun.runtime.upload.inline import NOT_INLINED_KEY, inline_local_images, local_image_to_data_url
from rlrun.runtime.upload.logger import UPLOAD_FAILURES, LogResult, SampleLogger
from rlrun.runtime.upload.parquet import SAMPLE_SCHEMA, sample_row, write_samples_parquet
from rlrun.runtime.upload.presign import object_key, presign_s3_put, request_presigned_url, s3_client_from_env
from rlrun.runtime.upload.put import PutResult, UploadError, redact_text, redact_url, stream_put

__all__ = [
    "NOT_INLINED_KEY",
    "SAMPLE_SCHEMA",
    "UPLOAD_FAILURES",
    "LogResult",
    "PutResult",
    "SampleLogger",
    "UploadError",
    "inline_local_images",
    "local_image_to_data_url",
    "object_key",
    "presign_s3_put",
    "redact_text",
    "redact_url",
    "request_presigned_url",
    "s3_client_from_env",
    "sample_row",
    "stream_put",
    "write_samples_parquet",
]
