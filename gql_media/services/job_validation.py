"""Checks of the inputs a new job is made from: each names the field it is about."""

from __future__ import annotations

from datetime import UTC, datetime

from gql_media.domain import MAX_GROUP_LENGTH, MAX_PRIORITY, MIN_PRIORITY, Principal, Scheduling
from gql_media.errors import ErrorCode, UserError
from gql_media.services.input_limits import name_problem, text_problem, url_problem
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
    key_problem = name_problem("idempotencyKey", idempotency_key, MAX_IDEMPOTENCY_KEY)
    if key_problem is not None:
        errors.append(key_problem)
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


def scheduling_problems(
    scheduling: Scheduling, principal: Principal, now: datetime
) -> list[UserError]:
    """What is wrong with what a new job asks of the scheduler: a priority out of range or
    above the key's limit, an empty or too long group, a deadline that is not ahead."""
    errors = []
    priority = scheduling.priority
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        errors.append(
            UserError(
                ErrorCode.INVALID_ARGUMENT,
                f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}",
                "priority",
            )
        )
    elif priority > principal.priority_limit:
        errors.append(
            UserError(
                ErrorCode.PRIORITY_NOT_ALLOWED,
                f"this API key may ask for priorities up to {principal.priority_limit}",
                "priority",
            )
        )
    problem = name_problem("group", scheduling.group, MAX_GROUP_LENGTH)
    if problem is not None:
        errors.append(problem)
    deadline = scheduling.deadline
    if deadline is not None:
        if deadline.tzinfo is None:
            errors.append(
                UserError(
                    ErrorCode.INVALID_ARGUMENT,
                    "deadline needs a time zone, e.g. 2030-01-01T12:00:00Z",
                    "deadline",
                )
            )
        elif deadline <= now:
            errors.append(
                UserError(ErrorCode.DEADLINE_IN_PAST, "deadline must be in the future", "deadline")
            )
        else:
            try:
                deadline.astimezone(UTC)
            except OverflowError:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
                errors.append(
                    UserError(ErrorCode.INVALID_ARGUMENT, "deadline is too far ahead", "deadline")
                )
    return errors
