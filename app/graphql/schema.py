"""The schema: each domain contributes its Query and Mutation fields; streaming its Subscription.

`sdl_schema` is the settings-independent schema that `schema.graphql` is exported from
(`strawberry export-schema app.graphql.schema:sdl_schema`); `build_schema` adds the per-deployment
extensions (limits, introspection, error shaping) around the very same types.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types.execution import ExecutionContext

from app.auth.graphql import AuthMutation, AuthQuery
from app.config import Settings
from app.conversations.graphql import ConversationsMutation, ConversationsQuery
from app.graphql.context import UnitOfWorkExtension
from app.graphql.errors import ErrorCodes, log_unexpected
from app.graphql.executor import CompiledEventExecutor
from app.llm.graphql import ModelsQuery
from app.streaming.graphql import STREAM_EVENT_TYPES, StreamingSubscription
from app.usage.graphql import UsageQuery

Query = merge_types("Query", (AuthQuery, ConversationsQuery, UsageQuery, ModelsQuery))
Mutation = merge_types("Mutation", (AuthMutation, ConversationsMutation))


# graphql-core adds " Did you mean 'x'?" (or "'x', 'y', or 'z'?") to what it cannot find.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


class AppSchema(strawberry.Schema):
    @staticmethod
    def remove_field_suggestion(error: GraphQLError) -> None:
        # Called for every error when suggestions are off. Strawberry's own version only strips
        # them from unknown fields; unknown arguments, input fields and types would still spell
        # out the schema that a production server keeps to itself.
        error.message = _SUGGESTION.sub("", error.message)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (bad input, not found, ...) are answers, not incidents: log only the rest.
        log_unexpected(errors, execution_context)


def build_schema(settings: Settings) -> strawberry.Schema:
    # The depth and alias limits are validation rules. Each QueryDepthLimiter/MaxAliasesLimiter
    # instance builds a new rule class, and ValidationCache keys on the rule classes: built per
    # operation, they made every validation a cache miss (a full validation per subscription,
    # a quarter of the CPU of a streaming server). Built once here, validation is cached.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    # Factories, not instances: each operation gets its own extension objects.
    extensions: list[Any] = [
        UnitOfWorkExtension,
        ErrorCodes,
        partial(ParserCache, maxsize=256),
        partial(ValidationCache, maxsize=256),
        partial(AddValidationRules, limit_rules),
        partial(MaxTokensLimiter, max_token_count=settings.graphql_max_tokens),
    ]
    if not settings.resolved_introspection:
        extensions.append(DisableIntrospection)
    return AppSchema(
        query=Query,
        mutation=Mutation,
        subscription=StreamingSubscription,
        types=STREAM_EVENT_TYPES,
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=settings.is_production),
        # Subscription events take a compiled path (same results, a fraction of the CPU).
        execution_context_class=CompiledEventExecutor,
    )


sdl_schema = strawberry.Schema(
    query=Query, mutation=Mutation, subscription=StreamingSubscription, types=STREAM_EVENT_TYPES
)
