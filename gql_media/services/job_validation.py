"""Checks of the inputs a new job is made from: each names the field it is about."""

from __future__ import annotations

from gql_media.errors import ErrorCode, UserError
from gql_media.services.input_limits import text_problem, url_problem
from gql_media.settings import Settings

MAX_SEED = 2**31 - 1  # GraphQL's Int is a signed 32-bit integer
MAX_PROVIDER_NAME = 64  # the length of the provider column
MAX_IDEMPOTENCY_KEY = 255


def prompt_problem(s: Settings, prompt: str) -> UserError | None:
    """What is wrong with a job's prompt, or None."""
    problem = text_problem("prompt", prompt)
    if problem is not None:
        return problem
    length = len(prompt.strip())
    if not length:
        return UserError(ErrorCode.PROMPT_EMPTY, "prompt must not be empty", "prompt")
    if length > s.max_prompt_length:
        return UserError(
            ErrorCode.PROMPT_TOO_LONG,
            f"prompt is {length} characters; the maximum is {s.max_prompt_length}",
            "prompt",
        )
    return None


def negative_prompt_problem(s: Settings, negative_prompt: str | None) -> UserError | None:
    """What is wrong with a job's negative prompt, or None."""
    if negative_prompt is not None and len(negative_prompt) > s.max_prompt_length:
        return UserError(
            ErrorCode.PROMPT_TOO_LONG,
            f"negativePrompt is longer than {s.max_prompt_length} characters",
            "negativePrompt",
        )
    return text_problem("negativePrompt", negative_prompt)


def common_problems(
    settings: Settings, idempotency_key: str | None, webhook_url: str | None
) -> list[UserError]:
    """Problems with the inputs every job-creating mutation takes."""
    errors = []
    key_problem = text_problem("idempotencyKey", idempotency_key, MAX_IDEMPOTENCY_KEY)
    if key_problem is not None:
        errors.append(key_problem)
    elif idempotency_key is not None and not idempotency_key:
        errors.append(
            UserError(
                ErrorCode.INVALID_ARGUMENT,
                f"idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                "idempotencyKey",
            )
        )
    errors.extend(webhook_url_problems(settings, webhook_url))
    return errors


def webhook_url_problems(settings: Settings, url: str | None) -> list[UserError]:
    """What is wrong with a job's ``webhookUrl`` (where it points is checked when it is
    delivered, against the outbound rules)."""
    if url is None:
        return []
    if settings.webhook_secret is None:
        return [
            UserError(
                ErrorCode.WEBHOOKS_NOT_CONFIGURED,
                "this server sends no webhooks (GQL_MEDIA_WEBHOOK_SECRET is not set)",
                "webhookUrl",
            )
        ]
    problem = url_problem("webhookUrl", url, settings.max_webhook_url_length)
    if problem is not None:
        return [problem]
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https") or "://" not in url:
        return [
            UserError(
                ErrorCode.INVALID_ARGUMENT,
                "webhookUrl must be an http(s) URL of at most "
                f"{settings.max_webhook_url_length} characters",
                "webhookUrl",
            )
        ]
    return []
