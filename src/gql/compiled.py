"""Compiled queries, part two: a collected tree turned into steps that call the schema's own
resolvers directly and serialise as they go.

Like graphql-jit, and unlike a second implementation of the API: every field is answered by
the very resolver, permission class, argument conversion and scalar serialiser strawberry
uses; what goes is graphql-core's per-field bookkeeping (info objects, paths, middleware,
awaitable checks on every value). Objects whose fields never wait are completed in a plain
loop; only subtrees with an async resolver are gathered, so DataLoaders still batch a list.

Errors are not reproduced here: a step that fails, a permission refused or a null where the
schema promises a value raises `Unsupported`, and strawberry answers the whole request (a
query reads and never writes, so running it again is safe). That keeps the reference
semantics for every error, its path, location, code and masking, at no cost to the answers
that succeed.
"""

from __future__ import annotations

import asyncio
import inspect
import keyword
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, cast

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
)
from graphql.execution.values import VariableValues, get_argument_values
from strawberry.permission import PermissionExtension
from strawberry.types.field import StrawberryField

from .arguments import converter
from .context import Context
from .once import RunsOnce, remember
from .plan import Selection
from .projection import ROWS, row_columns


class Unsupported(Exception):
    """strawberry answers this request (an error to report, or a field not compiled)."""


@dataclass(frozen=True, slots=True)
class Info:
    """What our resolvers and permission classes read from strawberry's Info."""

    context: Context
    # For a field that reads customers' rows for its selection (projection.ROWS): the
    # columns that selection reads; None: whole rows.
    row_columns: frozenset[str] | None = None


Complete = Callable[[Any, "Run"], Any]


@dataclass(frozen=True, slots=True)
class Typename:
    name: str


@dataclass(frozen=True, slots=True)
class Attribute:
    """A plain field: the attribute of that name, with nothing to check first."""

    name: str


@dataclass(frozen=True, slots=True)
class Method:
    """A resolver that takes the object alone, or the object and the info (by that name)."""

    func: Callable[..., Any]
    info: str | None = None


Inline = Typename | Attribute | Method


@dataclass(frozen=True, slots=True)
class Run:
    """One execution: the request's context and coerced variables."""

    info: Info
    variables: VariableValues


@dataclass(frozen=True, slots=True)
class Step:
    key: str
    field: StrawberryField | None  # None: __typename
    typename: str
    selection: Selection
    call: Callable[[Any, Run], Any]  # source -> value (or awaitable when `waits`)
    waits: bool
    complete: Complete
    deep: bool  # something at or below this step waits
    inline: Inline | None  # how build() may call it without `call`


class Compiler:
    """Steps per collected tree, made once and kept with it."""

    def __init__(self, schema: strawberry.Schema) -> None:
        self.schema = schema

    def steps(
        self, root: GraphQLObjectType, tree: tuple[Selection, ...], cache: dict[int, Any]
    ) -> tuple[Step, ...] | None:
        """None when some field of the tree is not compiled (introspection, say). `cache`
        belongs to whoever holds the tree (its document), so its id stays its own."""
        if id(tree) in cache:
            return cast("tuple[Step, ...] | None", cache[id(tree)])
        try:
            steps: tuple[Step, ...] | None = self._object(root, tree)
        except Unsupported:
            steps = None
        # A mutation field is compiled only when its resolver runs once per request:
        # strawberry, answering after us, must not write again.
        if steps is not None and root is self.schema._schema.mutation_type:
            if not all(s.field is None or _runs_once(s.field) for s in steps):
                steps = None
        cache[id(tree)] = steps
        return steps

    def _object(self, parent: GraphQLObjectType, tree: Sequence[Selection]) -> tuple[Step, ...]:
        return tuple(self._step(parent, s) for s in tree)

    def _step(self, parent: GraphQLObjectType, sel: Selection) -> Step:
        if sel.name == "__typename":
            name = parent.name
            return Step(
                sel.key, None, name, sel, lambda _s, _r: name, False, _same, False, Typename(name)
            )
        if sel.definition is None:
            raise Unsupported(sel.name)
        field = sel.definition.extensions.get("strawberry-definition")
        if not isinstance(field, StrawberryField):
            raise Unsupported(sel.name)
        call, waits, inline = self._call(field, sel)
        complete, deep = self._complete(sel.definition.type, sel)
        return Step(sel.key, field, parent.name, sel, call, waits, complete, waits or deep, inline)

    def _call(
        self, field: StrawberryField, sel: Selection
    ) -> tuple[Callable[[Any, Run], Any], bool, Inline | None]:
        permissions, once = [], _runs_once(field)
        for extension in field.extensions:
            if isinstance(extension, RunsOnce):
                continue
            if not isinstance(extension, PermissionExtension) or extension.use_directives:
                raise Unsupported(sel.name)  # behaviour this path does not know
            permissions.extend(extension.permissions)
        arguments = self._arguments(field, sel)
        resolver = field.base_resolver
        if once and (resolver is None or not resolver.is_async):
            raise Unsupported(sel.name)
        if resolver is None:
            read = attrgetter(field.python_name)

            def plain(source: Any, run: Run, kwargs: dict[str, Any] | None = None) -> Any:
                return read(source)

            simple = not permissions and arguments is None
            attribute = Attribute(field.python_name) if simple else None
            return self._guard(plain, permissions, arguments), False, attribute
        if resolver.root_parameter or resolver.parent_parameter:
            raise Unsupported(sel.name)
        func = cast(Callable[..., Any], resolver.wrapped_func)
        if once:
            func = _once(func, sel.key)
        takes_self = resolver.self_parameter is not None
        info_name = resolver.info_parameter.name if resolver.info_parameter else None
        # (never a run-once resolver: build() would call it without the run it needs)
        simple = arguments is None and not permissions and not once
        if takes_self and info_name is None and simple:
            # most fields of a row: a method of the object, nothing else to pass

            def method(source: Any, run: Run) -> Any:
                return func(source)

            return method, resolver.is_async, Method(func)
        if takes_self and simple and _identifier(info_name or ""):
            inline: Inline | None = Method(func, info_name)  # a row's nested object, say
        else:
            inline = None

        # worked out once per document, as the rest of the step
        columns = row_columns(sel.children) if field.metadata.get(ROWS) else None

        def resolve(source: Any, run: Run, kwargs: dict[str, Any] | None = None) -> Any:
            if kwargs is None:
                kwargs = arguments(run) if arguments is not None else {}
            if info_name is not None:
                info = run.info if columns is None else Info(run.info.context, columns)
                kwargs[info_name] = info
            if once:
                kwargs[_RUN] = run
            return func(source, **kwargs) if takes_self else func(**kwargs)

        return self._guard(resolve, permissions, arguments), resolver.is_async, inline

    def _arguments(
        self, field: StrawberryField, sel: Selection
    ) -> Callable[[Run], dict[str, Any]] | None:
        if not field.arguments:
            return None
        definition = sel.definition
        assert definition is not None
        registry = self.schema.schema_converter.scalar_registry
        convert = converter(field.arguments, registry, self.schema.config)

        def arguments(run: Run) -> dict[str, Any]:
            return convert(get_argument_values(definition, sel.node, run.variables))

        return arguments

    @staticmethod
    def _guard(
        call: Callable[..., Any],  # (source, run, kwargs=None)
        permissions: list[Any],
        arguments: Callable[[Run], dict[str, Any]] | None,
    ) -> Callable[[Any, Run], Any]:
        if not permissions:
            return call

        def guarded(source: Any, run: Run) -> Any:
            # converted once, for the permissions and the resolver (as strawberry does)
            kwargs = arguments(run) if arguments is not None else {}
            for permission in permissions:
                allowed = permission.has_permission(source, run.info, **kwargs)
                if inspect.isawaitable(allowed) or not allowed:
                    raise Unsupported("permission")  # strawberry says FORBIDDEN, its way
            return call(source, run, kwargs)

        return guarded

    def _complete(
        self, type_: GraphQLOutputType, sel: Selection, *, required: bool = False
    ) -> tuple[Complete, bool]:
        """The completion of a value of `type_`, and whether it waits. `required`: the type
        was non-null, and each kind checks for its null itself (no wrapper to call)."""
        if isinstance(type_, GraphQLNonNull):
            return self._complete(type_.of_type, sel, required=True)
        if isinstance(type_, GraphQLList):
            item, deep = self._complete(type_.of_type, sel)
            if deep:

                async def gathered(value: Any, run: Run) -> Any:
                    if value is None:
                        return _null(required)
                    return await _all([_settle(item(v, run)) for v in value])

                return gathered, True

            def listed(value: Any, run: Run) -> Any:
                return _null(required) if value is None else [item(v, run) for v in value]

            return listed, False
        if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
            return _leaf(type_, required=required), False
        assert isinstance(type_, GraphQLObjectType)
        steps = self._object(type_, sel.children)
        if any(s.deep for s in steps):

            async def later(value: Any, run: Run) -> Any:
                return _null(required) if value is None else await execute(steps, value, run)

            return later, True

        return build(steps, required=required), False


def _runs_once(field: StrawberryField) -> bool:
    return any(isinstance(e, RunsOnce) for e in field.extensions)


_RUN = "__c360_run"  # how _once finds the request's memo among a resolver's arguments


def _once(func: Callable[..., Awaitable[Any]], key: str) -> Callable[..., Awaitable[Any]]:
    """A root mutation field's resolver, called at most once per request (once.py): the
    outcome is kept where strawberry, answering the request after us, finds it."""

    async def once(*args: Any, **kwargs: Any) -> Any:
        run: Run = kwargs.pop(_RUN)
        return await remember(run.info.context.outcomes, key, lambda: func(*args, **kwargs))

    return once


def _null(required: bool) -> None:
    """A null where one was found: strawberry's to report when the schema promised a value."""
    if required:
        raise Unsupported("null in a non-null field")


def _same(value: Any, run: Run) -> Any:
    return value


# Values these scalars already are when our resolvers return them: serialising them would
# give them back unchanged (graphql-core's serialize_string, serialize_id, ...).
_NATIVE: dict[str, type] = {"String": str, "ID": str, "Boolean": bool}


def _leaf(type_: GraphQLScalarType | GraphQLEnumType, *, required: bool = False) -> Complete:
    serialize = type_.serialize
    native = _NATIVE.get(type_.name)
    # An enum's members as its serialiser names them, worked out once (strawberry's looks
    # through the values for each one); anything else still goes to the serialiser.
    enum = getattr(type_, "wrapped_cls", None) if isinstance(type_, GraphQLEnumType) else None
    names = _names(serialize, enum) if enum is not None else {}

    def leaf(value: Any, run: Run) -> Any:
        if value is None:
            if required:
                raise Unsupported("null in a non-null field")
            return None
        if type(value) is native:
            return value
        if type(value) is enum and value in names:
            return names[value]
        return serialize(value)

    # For build(), which checks these inline and calls the leaf only for what is left.
    leaf.native = native  # type: ignore[attr-defined]
    # A member's name by the member's identity: members live as long as their enum, so no
    # other value has their id, and an id costs no call to the Enum's Python __hash__.
    leaf.by_id = {id(m): n for m, n in names.items()}  # type: ignore[attr-defined]
    leaf.serialize = None if enum is not None else serialize  # type: ignore[attr-defined]
    leaf.json_native = _JSON_NATIVE.get(type_.name)  # type: ignore[attr-defined]
    return leaf


# Scalars whose values of one exact kind orjson writes byte for byte as the scalar's own
# serialiser does, in C and once, with the whole answer: such a value is left in the answer
# as it is (tests/unit/test_compiled_build.py proves the equality). A UTC datetime's
# isoformat() cost 0.8 us, 50 of them a page; orjson writes it in 0.1.
_JSON_NATIVE: dict[str, tuple[type, Any]] = {"DateTime": (datetime, UTC)}  # (class, tzinfo)


def _names(serialize: Callable[[Any], Any], enum: Iterable[Any]) -> dict[Any, Any]:
    names = {}
    for member in enum:
        try:
            names[member] = serialize(member)
        except (ValueError, TypeError, GraphQLError):  # not in the schema: serialize says so
            continue
    return names


async def _settle(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def build(steps: Sequence[Step], *, required: bool = False) -> Complete:
    """The completion of an object whose fields never wait, as one generated function (as
    graphql-jit generates one per operation): each field's resolver called directly, a
    String, ID or Boolean already of its type kept as it is, an enum member named and any
    other scalar serialised inline, everything else (and every null) completed by its step.
    A 50-row page completes about 500 fields; this spares each one the loop's lookups and
    two calls. `required`: the object itself is non-null."""
    names: dict[str, Any] = {"Unsupported": Unsupported}
    values, entries = [], []
    for i, s in enumerate(steps):
        inline = s.inline
        if isinstance(inline, Typename):
            entries.append(f"{s.key!r}: {inline.name!r}")
            continue
        if isinstance(inline, Attribute) and _identifier(inline.name):
            values.append(f"    v{i} = value.{inline.name}")
        elif isinstance(inline, Method):
            names[f"f{i}"] = inline.func
            info = f", {inline.info}=run.info" if inline.info else ""
            values.append(f"    v{i} = f{i}(value{info})")
        else:
            names[f"k{i}"] = s.call
            values.append(f"    v{i} = k{i}(value, run)")
        names[f"c{i}"] = s.complete
        native = getattr(s.complete, "native", None)
        by_id = getattr(s.complete, "by_id", None)
        serialize = getattr(s.complete, "serialize", None)
        if native is not None:
            names[f"n{i}"] = native
            entries.append(f"{s.key!r}: v{i} if v{i}.__class__ is n{i} else c{i}(v{i}, run)")
        elif by_id:  # names are never empty, so `or` only passes on a miss
            names[f"e{i}"] = by_id.get
            entries.append(f"{s.key!r}: e{i}(id(v{i})) or c{i}(v{i}, run)")
        elif serialize is not None:
            names[f"s{i}"] = serialize
            serialized = f"c{i}(v{i}, run) if v{i} is None else s{i}(v{i})"
            native_json = getattr(s.complete, "json_native", None)
            if native_json is not None:
                names[f"j{i}"], names[f"z{i}"] = native_json
                serialized = (
                    f"v{i} if v{i}.__class__ is j{i} and v{i}.tzinfo is z{i} else {serialized}"
                )
            entries.append(f"{s.key!r}: {serialized}")
        else:
            entries.append(f"{s.key!r}: c{i}(v{i}, run)")
    absent = "raise Unsupported('null in a non-null field')" if required else "return None"
    source = "\n".join(
        [
            "def complete(value, run):",
            "    if value is None:",
            f"        {absent}",
            *values,
            "    return {" + ", ".join(entries) + "}",
        ]
    )
    exec(compile(source, "<compiled object>", "exec"), names)  # noqa: S102  # our own text
    return cast(Complete, names["complete"])


async def execute(steps: Sequence[Step], source: Any, run: Run) -> dict[str, Any]:
    """Fields that wait run concurrently (as graphql-core runs them), so loaders batch."""
    out: dict[str, Any] = {}
    pending: list[tuple[str, Awaitable[Any]]] = []
    for s in steps:
        value = s.call(source, run)
        if s.waits:
            pending.append((s.key, _then(value, s, run)))
            out[s.key] = None  # its place in the answer's order
        elif s.deep:
            pending.append((s.key, _settle(s.complete(value, run))))
            out[s.key] = None
        else:
            out[s.key] = s.complete(value, run)
    if pending:
        values = await _all([p[1] for p in pending])
        for (key, _), value in zip(pending, values, strict=True):
            out[key] = value
    return out


async def execute_serially(steps: Sequence[Step], run: Run) -> dict[str, Any]:
    """A mutation's root fields, one after the other (GraphQL's ExecuteSerially)."""
    out: dict[str, Any] = {}
    for s in steps:
        value = s.call(None, run)
        if s.waits:
            value = await value
        out[s.key] = await _settle(s.complete(value, run))
    return out


async def _all(awaitables: Sequence[Awaitable[Any]]) -> list[Any]:
    """All results, or the first failure with the rest cancelled (no orphaned work)."""
    if len(awaitables) == 1:
        return [await awaitables[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_settle(a)) for a in awaitables]
    except BaseExceptionGroup as failed:
        raise Unsupported("a field failed") from failed
    return [t.result() for t in tasks]


async def _then(value: Awaitable[Any], step: Step, run: Run) -> Any:
    return await _settle(step.complete(await value, run))
