"""A graphql-core executor with a compiled path for subscription events.

For every event of a subscription, graphql-core collects the selected fields again and sends each
field through the resolver machinery: ~90 µs per event here, which is most of the CPU a streamed
reply costs over websockets. The events of `streamMessage` are plain data (Strawberry types whose
fields are attributes, no resolvers, no arguments), so this executor compiles, once per
subscription and concrete event type, a plan from the client's own selection set -- fields,
aliases, fragments, `__typename`, `@skip`/`@include` as resolved by graphql-core's own
`collect_fields` -- and then builds each event's result by reading attributes and serialising
leaves with the schema's own scalars and enums.

It is still a GraphQL subscription: the result is exactly what the generic execution produces for
the same selection. Anything the plan cannot express (a field with a resolver or arguments, a null
where the schema says non-null, an unknown payload) falls back to graphql-core for that event. So
does any field that Strawberry would run more than an attribute read for: permission classes,
field extensions, a non-default resolver. A permission added to an event's field is therefore
enforced, by the generic path, without anyone having to remember this executor.

`COUNTS` says how many events took each path (tests assert the fast path really runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLUnionType,
)
from graphql.execution.collect_fields import FieldDetails, collect_fields, collect_subfields
from graphql.execution.executor import Executor
from graphql.pyutils import AwaitableOrValue
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

Complete = Callable[[Any], Any]
_DEFINITION = "strawberry-definition"


@dataclass
class ExecutionCounts:
    """Subscription events executed per path, since the process started."""

    compiled: int = 0
    generic: int = 0


COUNTS = ExecutionCounts()


class _CannotCompile(Exception):
    """This selection needs the generic execution."""


class _NullInNonNull(Exception):
    """A null where the schema forbids it: let graphql-core report it properly."""


class CompiledEventExecutor(StrawberryGraphQLCoreExecutionContext):
    _plans: dict[str, Complete | None]
    _event: bool = False

    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        if not hasattr(self, "_plans"):
            self._plans = {}  # shared by every event of this subscription
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, CompiledEventExecutor)
        executor._event = True
        return executor

    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        if self._event:
            result = self._execute_compiled()
            if result is not None:
                COUNTS.compiled += 1
                return result
            COUNTS.generic += 1
        return super().execute_operation(serially)

    def _execute_compiled(self) -> ExecutionResult | None:
        payload = self.root_value
        type_name = _type_name(payload)
        if type_name is None:
            return None
        manager = self.middleware_manager
        if manager is not None and manager.middlewares:
            return None  # field middleware (an extension's `resolve` hook) must see every field
        plans = self._plans
        if type_name not in plans:
            try:
                plans[type_name] = self._compile_root(type_name)
            except _CannotCompile:
                plans[type_name] = None
        plan = plans[type_name]
        if plan is None:
            return None
        try:
            return ExecutionResult(data=plan(payload), errors=None)
        except (_NullInNonNull, GraphQLError, AttributeError, TypeError, ValueError):
            return None  # graphql-core reports it, with the path and locations

    # --- compiling ---

    def _compile_root(self, type_name: str) -> Complete:
        root_type = self.schema.subscription_type
        if root_type is None:
            raise _CannotCompile
        grouped = collect_fields(
            self.schema, self.fragments, self.variable_values, root_type, self.operation
        ).grouped_field_set
        if len(grouped) != 1:
            raise _CannotCompile
        ((key, details),) = grouped.items()
        field = root_type.fields.get(details[0].node.name.value)
        definition = field.extensions.get(_DEFINITION) if field else None
        if field is None or definition is None or _checked_by_strawberry(definition):
            raise _CannotCompile
        # The payload is the field's value: Strawberry resolves a subscription field per event
        # to the event the generator yielded.
        complete = self._complete(field.type, details)
        return lambda payload: {key: complete(payload)}

    def _complete(self, type_: GraphQLOutputType, details: list[FieldDetails]) -> Complete:
        if isinstance(type_, GraphQLNonNull):
            inner = self._complete(type_.of_type, details)

            def non_null(value: Any) -> Any:
                if value is None:
                    raise _NullInNonNull
                return inner(value)

            return non_null
        if isinstance(type_, GraphQLList):
            item = self._complete(type_.of_type, details)
            return lambda value: None if value is None else [item(v) for v in value]
        if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
            serialize = type_.serialize
            return lambda value: None if value is None else serialize(value)
        if isinstance(type_, GraphQLObjectType):
            return self._complete_object(type_, details)
        if isinstance(type_, GraphQLInterfaceType | GraphQLUnionType):
            return self._complete_abstract(type_, details)
        raise _CannotCompile

    def _complete_abstract(
        self, type_: GraphQLInterfaceType | GraphQLUnionType, details: list[FieldDetails]
    ) -> Complete:
        by_name: dict[str, Complete] = {}

        def complete(value: Any) -> Any:
            if value is None:
                return None
            name = _type_name(value)
            if name is None:
                raise TypeError("unknown runtime type")
            if name not in by_name:
                runtime = self.schema.get_type(name)
                if not isinstance(runtime, GraphQLObjectType) or not self.schema.is_sub_type(
                    type_, runtime
                ):
                    raise TypeError("runtime type outside the abstract type")
                by_name[name] = self._complete_object(runtime, details)
            return by_name[name](value)

        return complete

    def _complete_object(self, type_: GraphQLObjectType, details: list[FieldDetails]) -> Complete:
        grouped = collect_subfields(
            self.schema, self.fragments, self.variable_values, self.operation, type_, details
        ).grouped_field_set
        fields: list[tuple[str, str | None, Complete | None]] = []
        for key, field_details in grouped.items():
            name = field_details[0].node.name.value
            if name == "__typename":
                fields.append((key, None, None))
                continue
            field = type_.fields.get(name)
            definition = field.extensions.get(_DEFINITION) if field else None
            if field is None or definition is None or not _reads_an_attribute(field, definition):
                raise _CannotCompile  # more than an attribute read: needs the generic execution
            fields.append((key, definition.python_name, self._complete(field.type, field_details)))
        typename = type_.name

        def complete(value: Any) -> Any:
            if value is None:
                return None
            return {
                key: typename if attribute is None else leaf(getattr(value, attribute))  # type: ignore[misc]
                for key, attribute, leaf in fields
            }

        return complete


def _checked_by_strawberry(definition: Any) -> bool:
    """Whether Strawberry runs permission classes or field extensions around the field."""
    return bool(getattr(definition, "permission_classes", None)) or bool(
        getattr(definition, "extensions", None)
    )


def _reads_an_attribute(field: GraphQLField, definition: Any) -> bool:
    """Whether the generic execution would do nothing for this field but read an attribute."""
    return (
        getattr(definition, "base_resolver", None) is None
        and not field.args
        and not _checked_by_strawberry(definition)
        # Strawberry marks the resolver it gives a plain field; anything else does more.
        and (field.resolve is None or getattr(field.resolve, "_is_default", False))
    )


def _type_name(value: Any) -> str | None:
    definition = getattr(value, "__strawberry_definition__", None)
    name = getattr(definition, "name", None)
    return name if isinstance(name, str) else None
