"""The storage backend the settings ask for."""

from __future__ import annotations

from gql_media.adapters.storage import LocalStorage, Storage
from gql_media.settings import Settings


def build_storage(settings: Settings) -> Storage:
    if settings.storage_backend == "local":
        return LocalStorage(settings.effective_storage_dir)
    from gql_media.adapters.s3 import S3Storage  # boto3 is needed only for this backend

    assert settings.s3_bucket is not None  # checked by Settings
    secret = settings.s3_secret_access_key
    return S3Storage(
        settings.s3_bucket,
        settings.scratch_dir,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        prefix=settings.s3_prefix,
        create_bucket=settings.s3_create_bucket,
    )
