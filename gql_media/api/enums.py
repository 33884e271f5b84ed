"""The GraphQL definitions of the domain's enums, registered once, before any type uses
them; fields use the domain enums directly."""

import strawberry

from gql_media import domain
from gql_media.errors import ErrorCode

strawberry.enum(domain.JobStatus, description="Where a job is in its lifecycle.")
strawberry.enum(domain.JobKind, description="What a job does.")
strawberry.enum(domain.OutputFormat, description="Encoding of generated images.")
strawberry.enum(
    ErrorCode,
    description="A stable code of an expected problem or a failed job; docs/errors.md "
    "says what each means. The same strings as errors[].extensions.code.",
)
