"""Configuration, read from ``GQL_MEDIA_*`` environment variables.

With neither ``GQL_MEDIA_DATABASE_URL`` nor a Redis (``GQL_MEDIA_REDIS_URL``, or
``GQL_MEDIA_REDIS_SENTINELS``: ``redis_settings``) set the service runs embedded: SQLite under
the data directory and an in-process Redis stand-in.

``GQL_MEDIA_PATCHES`` chooses which speed patches of dependencies' internals are on (the
api's in ``gql_media/api/patches``, arq's in ``gql_media/adapters/arq_patch/``):
``all`` (the default), ``none``, or a comma-separated list of names from ``PATCHES``. A patch
that is off leaves the dependency's public path in its place, slower but the same to
clients. The protections against slow and greedy clients use uvicorn's and strawberry's
internals too; they are not speed patches and stay on whatever this says.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from gql_media.redis_settings import RedisConnectionSettings

# Bounds of media work, here so the media adapters default to the same values
DEFAULT_MAX_ANIMATION_PIXELS = 200_000_000  # width x height x frames
DEFAULT_MAX_VIDEO_PIXELS = 40_000_000  # one video frame: 8K (8192x4320) fits
DEFAULT_MAX_MEDIA_SECONDS = 10_800.0  # three hours of video or audio

# The switchable patches of dependencies' internals: gql_media/api/patches/<name>.py, and
# arq_wakeups and arq_scripts, gql_media/adapters/arq_patch/
PATCHES = (
    "uvicorn_ws",
    "shared_results",
    "direct_events",
    "strawberry_results",
    "strawberry_validation",
    "strawberry_inputs",
    "strawberry_ws",
    "arq_wakeups",
    "arq_scripts",
)


class Settings(RedisConnectionSettings):
    """Every knob of the service; docs/configuration.md's tables mirror this class (the
    Redis ones are in ``redis_settings``)."""

    model_config = SettingsConfigDict(env_prefix="GQL_MEDIA_", extra="ignore")

    database_url: str | None = None
    # PostgreSQL connections each process keeps open (as many again may open under load)
    database_pool_size: int = Field(default=20, ge=1)
    # seconds one wait on PostgreSQL may take (connect, pool checkout, each statement) before
    # it fails as SERVICE_UNAVAILABLE: a silent outage (a partition) answers within this
    database_timeout: float = Field(default=5.0, gt=0)
    # database_url reaches PostgreSQL through PgBouncer in transaction pooling mode: no
    # prepared statement outlives its transaction (docs/architecture.md, "Behind PgBouncer")
    database_pgbouncer: bool = False
    data_dir: Path = Path("gql-media-data")
    storage_dir: Path | None = None
    # storage: "local" (storage_dir) or "s3" (an S3-compatible bucket; needs gql-media[s3])
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    s3_create_bucket: bool = False
    # seconds /readyz reuses the result of its storage write probe
    storage_probe_interval: float = Field(default=5.0, ge=0)
    redis_namespace: str = "gql_media"
    public_url: str | None = None
    debug: bool = False
    # production: auth required, introspection off unless asked for, no debug
    env: Literal["development", "production"] = "development"

    # who may ask: "off" (anyone, sees everything) or "required" (API keys)
    auth: Literal["off", "required"] = "off"
    # signs media URLs when auth is required; every api process needs the same one
    secret_key: SecretStr | None = None
    media_url_ttl: float = Field(default=3600.0, gt=0)
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    # watch tokens (createWatchToken): seconds one lives when the caller names none, and the
    # most a caller may ask for
    watch_token_ttl: int = Field(default=900, ge=1)
    watch_token_max_ttl: int = Field(default=86400, ge=1)
    rate_limit_per_minute: float = Field(default=120.0, ge=0)
    rate_limit_burst: int = Field(default=30, ge=1)
    max_active_jobs: int = Field(default=100, ge=0)
    # comma-separated in the environment
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # request headers those origins may send (CORS preflight): what GraphQL clients send
    cors_allow_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "Authorization",
            "Content-Type",
            "GraphQL-Require-Preflight",
            "Apollo-Require-Preflight",
            "X-Requested-With",
            "apollographql-client-name",
            "apollographql-client-version",
            "traceparent",
            "tracestate",
        ]
    )
    outbound_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # outbound webhooks: jobs with a webhookUrl are POSTed there, signed, when they end
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_retry_base_delay: float = Field(default=2.0, ge=0)
    webhook_retry_max_delay: float = Field(default=300.0, ge=0)
    webhook_timeout: float = Field(default=10.0, gt=0)

    # GraphQL limits
    max_query_depth: int = Field(default=10, ge=1)
    max_aliases: int = Field(default=15, ge=1)
    max_tokens: int = Field(default=2000, ge=10)
    # a /graphql request's body, comments and whitespace included
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # parsed and validated documents kept, counted in characters of their text
    document_cache_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    max_page_size: int = Field(default=100, ge=1)
    # jobs one generateImages request may submit
    max_batch: int = Field(default=100, ge=1)
    # ids one nodes(ids:) query may ask for
    max_nodes: int = Field(default=100, ge=1)
    max_query_cost: int = Field(default=20000, ge=1)
    max_subscriptions_per_connection: int = Field(default=20, ge=1)
    connection_init_timeout: float = Field(default=10.0, gt=0)
    introspection: bool | None = None  # None: on, except in production
    # a manifest of documents sent by id (``api.trusted``), and whether only they may run
    trusted_documents: Path | None = None
    trusted_documents_strict: bool = False

    # input limits
    max_prompt_length: int = Field(default=2000, ge=1)
    min_image_size: int = Field(default=64, ge=1)
    max_image_size: int = Field(default=2048, ge=1)
    max_outputs: int = Field(default=4, ge=1)
    # ``model`` is stored in a 256-character column
    max_model_length: int = Field(default=256, ge=1, le=256)
    # ``extra``: bytes of its JSON encoding, and levels of nesting (the encoder used for
    # events stops at 254)
    max_extra_bytes: int = Field(default=16384, ge=2)
    max_extra_depth: int = Field(default=10, ge=1, le=200)
    # ``webhookUrl`` is stored in a 2048-character column
    max_webhook_url_length: int = Field(default=2048, ge=16, le=2048)
    default_provider: str = "local"

    # uploads and processing
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=100_000_000, ge=1)
    # an animation: its canvas times its frames, each frame being decoded at canvas size
    max_animation_pixels: int = Field(default=DEFAULT_MAX_ANIMATION_PIXELS, ge=1)
    # one frame of a video (its coded size, and every decoded frame), and the duration of
    # a video or audio file
    max_video_pixels: int = Field(default=DEFAULT_MAX_VIDEO_PIXELS, ge=1)
    max_media_seconds: float = Field(default=DEFAULT_MAX_MEDIA_SECONDS, gt=0)
    # an upload is decoded before it is kept, so that damage is refused at once: images
    # whole, video and audio from the start up to these seconds of media and pixels of video
    # frames, whichever comes first (damage past them is found by processing jobs)
    upload_decode_seconds: float = Field(default=60.0, ge=0)
    upload_decode_pixels: int = Field(default=2_000_000_000, ge=0)
    # processing work runs in child processes with a memory ceiling, killed when its job
    # times out or is canceled; false runs it in threads of the worker (no ceiling, and the
    # work of a timed-out job runs on until it ends)
    process_isolation: bool = True
    process_memory_limit_mb: int = Field(default=3072, ge=0)  # 0: no ceiling
    max_variants: int = Field(default=10, ge=1)
    max_operations: int = Field(default=20, ge=1)

    # job execution
    max_attempts: int = Field(default=3, ge=1)
    retry_base_delay: float = Field(default=1.0, ge=0)
    retry_max_delay: float = Field(default=60.0, ge=0)
    job_timeout: float = Field(default=300.0, gt=0)
    progress_interval: float = Field(default=0.1, ge=0)
    worker_concurrency: int = Field(default=8, ge=1)
    worker_poll_delay: float = Field(default=0.5, gt=0)
    # scheduling: jobs of one fairness group running at once (0: no cap)
    max_running_per_group: int = Field(default=0, ge=0)
    # seconds between the queue positions sent to jobUpdated followers of waiting jobs
    queue_position_interval: float = Field(default=1.0, ge=0.05)
    # waiting jobs whose position an api process looks up per interval (in turns beyond)
    queue_position_batch: int = Field(default=1000, ge=1)
    lease_seconds: float = Field(default=6.0, gt=0)
    reconcile_interval: float = Field(default=2.0, gt=0)
    reconcile_after: float = Field(default=10.0, ge=0)
    shutdown_grace: float = Field(default=10.0, ge=0)

    # retention: 0 keeps finished jobs' media forever
    retention_seconds: float = Field(default=0.0, ge=0)
    retention_interval: float = Field(default=300.0, gt=0)
    orphan_grace: float = Field(default=3600.0, ge=0)

    # the built-in offline provider
    local_steps: int = Field(default=8, ge=1, le=64)
    local_step_delay: float = Field(default=0.1, ge=0)

    # the mock provider (defaults for its per-job ``extra`` options)
    mock_delay_ms: float = Field(default=0.0, ge=0)
    mock_steps: int = Field(default=4, ge=1)
    mock_failure_rate: float = Field(default=0.0, ge=0, le=1)

    # the replicate provider; jobs for it fail validation until a token is set
    replicate_api_token: SecretStr | None = None
    replicate_base_url: str = "https://api.replicate.com"
    replicate_model: str = "black-forest-labs/flux-schnell"
    replicate_webhook_secret: SecretStr | None = None
    replicate_wait: int = Field(default=5, ge=0, le=60)
    replicate_poll_interval: float = Field(default=0.5, gt=0)
    replicate_poll_max_interval: float = Field(default=5.0, gt=0)

    # the openai provider: OpenAI's images API, or any server speaking it
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-image-1"
    openai_response_format: Literal["b64_json", "url"] | None = None

    # images fetched from a provider's URLs
    max_download_bytes: int = Field(default=50 * 1024 * 1024, ge=1)

    # slow and greedy clients, bounded by each api process on its own
    # request line and headers: seconds from the connection (or the request's first byte)
    header_timeout: float = Field(default=10.0, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # a body must arrive within body_timeout seconds plus one second per body_min_rate bytes,
    # with no pause longer than body_idle_timeout (uploads too)
    body_timeout: float = Field(default=30.0, gt=0)
    body_min_rate: int = Field(default=1024, ge=1)
    body_idle_timeout: float = Field(default=30.0, gt=0)
    # open HTTP connections and WebSockets; 0: the open-file limit less what the process
    # keeps for its database, Redis and files
    max_connections: int = Field(default=0, ge=0)
    # open WebSockets, open HTTP streams (subscriptions over graphql-sse or multipart) and
    # running operations over both per key (per client address when auth is off); 0: no cap
    max_sockets_per_key: int = Field(default=256, ge=0)
    max_streams_per_key: int = Field(default=256, ge=0)
    max_subscriptions_per_key: int = Field(default=2048, ge=0)
    # bytes a WebSocket may have waiting for its client to read before it is closed (4413)
    ws_max_send_buffer_bytes: int = Field(default=1024 * 1024, ge=1024)
    # largest message a WebSocket client may send (close 1009 past it)
    ws_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)

    # subscriptions
    subscriber_queue_size: int = Field(default=256, ge=1)
    # jobEvents(since:): how far back a reconnecting dashboard may resume (seconds), and
    # how many changed jobs one resume may replay; past either: SINCE_TOO_OLD
    resume_max_age: float = Field(default=3600.0, gt=0, le=366 * 86400)
    # (at most the 10,000 versions a subscription remembers sending: see api.fanout.remember)
    resume_max_jobs: int = Field(default=5000, ge=1, le=10_000)
    # how far the clocks of the machines that stamp changes may differ: a since that far
    # ahead is taken, and a replay reads changes stamped up to that far past its start
    resume_clock_skew: float = Field(default=1.0, ge=0, le=60)
    # re-read jobs finished lately whose event was lost (a worker killed between its
    # commit and its publish), every this many seconds; 0 turns it off
    event_catchup_interval: float = Field(default=2.0, ge=0)

    # observability: log lines as text or one JSON object each; a worker's own /metrics
    log_format: Literal["text", "json"] = "text"
    # allocations between collections of Python's youngest GC generation in the api
    # (Python's default: 700; 0 keeps it): see cli._tune_gc
    gc_threshold: int = Field(default=10_000, ge=0)
    # one log line per HTTP request from the api (request counts and latencies are always
    # in /metrics)
    access_log: bool = False
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)  # 0: not served
    worker_metrics_host: str = "127.0.0.1"

    # the speed patches of dependencies' internals: "all", "none", or names from PATCHES
    patches: str = "all"

    @property
    def embedded(self) -> bool:
        """True when no external database or Redis is configured."""
        return self.database_url is None and not self.redis_configured

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gql_media.db').resolve()}"

    @property
    def effective_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "media").resolve()

    @property
    def scratch_dir(self) -> Path:
        """Where files being received or made wait before they are stored."""
        if self.storage_backend == "local":
            return self.effective_storage_dir / ".scratch"
        return (self.data_dir / "scratch").resolve()

    @field_validator("cors_origins", "cors_allow_headers", "outbound_allow", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            try:
                ok = (
                    text.startswith("whsec_")
                    and len(base64.b64decode(text[6:], validate=True)) >= 16
                )
            except binascii.Error:
                ok = False
            if not ok:
                raise ValueError("must be whsec_ followed by at least 16 bytes in base64")
        return value

    @field_validator("patches")
    @classmethod
    def _known_patches(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("all", "none"):
            return value
        unknown = [name for name in _names(value) if name not in PATCHES]
        if unknown:
            raise ValueError(
                f"unknown patches {', '.join(unknown)}: use all, none or names from "
                + ", ".join(PATCHES)
            )
        return value

    @property
    def patches_on(self) -> frozenset[str]:
        """The names of the patches that are on."""
        if self.patches == "all":
            return frozenset(PATCHES)
        if self.patches == "none":
            return frozenset()
        return frozenset(_names(self.patches))

    @property
    def introspection_enabled(self) -> bool:
        if self.introspection is not None:
            return self.introspection
        return self.env != "production"

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.env == "production":
            if self.auth != "required":
                raise ValueError("GQL_MEDIA_ENV=production needs GQL_MEDIA_AUTH=required")
            if self.secret_key is None:
                raise ValueError("GQL_MEDIA_ENV=production needs GQL_MEDIA_SECRET_KEY")
            if self.debug:
                raise ValueError("GQL_MEDIA_ENV=production refuses GQL_MEDIA_DEBUG=true")
        return self

    @model_validator(mode="after")
    def _strict_documents_have_a_manifest(self) -> Settings:
        if self.trusted_documents_strict and self.trusted_documents is None:
            raise ValueError(
                "GQL_MEDIA_TRUSTED_DOCUMENTS_STRICT needs GQL_MEDIA_TRUSTED_DOCUMENTS (a manifest)"
            )
        return self

    @model_validator(mode="after")
    def _watch_token_ttl_fits(self) -> Settings:
        if self.watch_token_ttl > self.watch_token_max_ttl:
            raise ValueError(
                "GQL_MEDIA_WATCH_TOKEN_TTL may not exceed GQL_MEDIA_WATCH_TOKEN_MAX_TTL"
            )
        return self

    @model_validator(mode="after")
    def _pgbouncer_is_postgresql(self) -> Settings:
        if self.database_pgbouncer and not (self.database_url or "").startswith("postgresql"):
            raise ValueError(
                "GQL_MEDIA_DATABASE_PGBOUNCER needs a PostgreSQL GQL_MEDIA_DATABASE_URL"
            )
        return self

    @model_validator(mode="after")
    def _storage_is_complete(self) -> Settings:
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("GQL_MEDIA_S3_BUCKET is required with GQL_MEDIA_STORAGE_BACKEND=s3")
        return self


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]
