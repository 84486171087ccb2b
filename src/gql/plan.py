"""Compiled operations, part one: a document parsed, validated and collected once.

A document is taken by the compiled path only when strawberry would execute it: it parses
within the token limit, passes the very validation rules the schema runs, and names a
query or a mutation (a mutation's resolvers then run once per request: once.py). Its
fields are collected as GraphQL's CollectFields does (fragments inlined, same response keys
merged, `@skip`/`@include` applied); the collected tree is kept per document and per value
of the variables that steer those directives.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    parse,
)
from graphql.execution.values import VariableValues, get_directive_values, get_variable_values


@dataclass(frozen=True, slots=True)
class Selection:
    """One response key of a selection set: its field and what is selected below it."""

    key: str
    name: str
    node: FieldNode  # the first of the merged nodes: arguments and error locations
    definition: GraphQLField | None  # None for __typename
    children: tuple[Selection, ...]


@dataclass(slots=True)
class Document:
    operation: OperationDefinitionNode
    root: GraphQLObjectType  # the query type, or the mutation type
    fragments: dict[str, FragmentDefinitionNode]
    steering: tuple[str, ...]  # variables that @skip/@include read
    trees: dict[tuple[Any, ...], tuple[Selection, ...]] = field(default_factory=dict)
    # What the compiler made of each tree (by its id: the tree is held above), so that it
    # leaves the cache with its document.
    compiled: dict[int, Any] = field(default_factory=dict)


# Parsing and validating a small document costs 1-1.5 ms, several times what answering it
# costs once cached; its AST and plan take about 60 bytes per character of text. The cache
# is bounded by text, not by count: clients that write ids into their documents send
# thousands of distinct small ones, and a count would let a few large ones take much memory.
TEXT_BUDGET = 512 * 1024  # characters: about 30 MB of plans
MAX_DOCUMENTS = 8192


class Planner:
    """Documents by (text, operation name), least recently used first out."""

    def __init__(
        self,
        schema: GraphQLSchema,
        validate: Callable[[DocumentNode], list[GraphQLError]],
        *,
        max_tokens: int,
        budget: int = TEXT_BUDGET,
        size: int = MAX_DOCUMENTS,
    ) -> None:
        self.schema = schema
        self.validate = validate
        self.max_tokens = max_tokens
        self.budget = budget
        self.size = size
        self.held = 0  # characters of the documents held
        self._documents: OrderedDict[tuple[str, str | None], Document | None] = OrderedDict()

    def document(self, query: str, operation_name: str | None) -> Document | None:
        """The document, or None when strawberry must answer it (invalid, a subscription)."""
        key = (query, operation_name)
        if key in self._documents:
            self._documents.move_to_end(key)
            return self._documents[key]
        doc = self._analyse(query, operation_name)
        self._documents[key] = doc
        self.held += len(query)
        while self.held > self.budget or len(self._documents) > self.size:
            (old, _), _ = self._documents.popitem(last=False)
            self.held -= len(old)
        return doc

    def _analyse(self, query: str, operation_name: str | None) -> Document | None:
        try:
            ast = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        if self.validate(ast):
            return None
        operation = _operation(ast, operation_name)
        if operation is None:
            return None
        kind = operation.operation
        root = {
            OperationType.QUERY: self.schema.query_type,
            OperationType.MUTATION: self.schema.mutation_type,
        }.get(kind)
        if root is None:
            return None
        fragments = {
            d.name.value: d for d in ast.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return Document(operation, root, fragments, _steering(ast))

    def variables(self, doc: Document, raw: dict[str, Any]) -> VariableValues | None:
        """Coerced variable values, or None when they are wrong (strawberry says how)."""
        coerced = get_variable_values(
            self.schema, doc.operation.variable_definitions or (), raw, max_errors=1
        )
        return None if isinstance(coerced, list) else coerced

    def tree(self, doc: Document, variables: VariableValues) -> tuple[Selection, ...]:
        key = tuple(variables.coerced.get(name) for name in doc.steering)
        tree = doc.trees.get(key)
        if tree is None:
            tree = _collect(self.schema, doc.root, [doc.operation.selection_set], doc, variables)
            doc.trees[key] = tree
        return tree


def _operation(ast: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in ast.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


def _steering(ast: DocumentNode) -> tuple[str, ...]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        for directive in getattr(node, "directives", None) or ():
            for arg in directive.arguments:
                if isinstance(arg.value, VariableNode):
                    names.add(arg.value.name.value)
        selection_set = getattr(node, "selection_set", None)
        for child in selection_set.selections if selection_set else ():
            visit(child)

    for definition in ast.definitions:
        visit(definition)
    return tuple(sorted(names))


def _included(node: Any, variables: VariableValues) -> bool:
    skip = get_directive_values(GraphQLSkipDirective, node, variables)
    if skip and skip.get("if") is True:
        return False
    include = get_directive_values(GraphQLIncludeDirective, node, variables)
    return not (include and include.get("if") is False)


def _collect(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    selection_sets: Sequence[SelectionSetNode],
    doc: Document,
    variables: VariableValues,
) -> tuple[Selection, ...]:
    grouped: dict[str, list[FieldNode]] = {}
    seen: set[str] = set()

    def walk(selection_set: SelectionSetNode) -> None:
        for sel in selection_set.selections:
            if not _included(sel, variables):
                continue
            if isinstance(sel, FieldNode):
                key = sel.alias.value if sel.alias else sel.name.value
                grouped.setdefault(key, []).append(sel)
            elif isinstance(sel, InlineFragmentNode):
                # Every type here is an object type: a fragment applies to its own type only.
                condition = sel.type_condition
                if condition is None or condition.name.value == parent.name:
                    walk(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                fragment = doc.fragments.get(name)
                if name in seen or fragment is None:
                    continue
                seen.add(name)
                if fragment.type_condition.name.value == parent.name:
                    walk(fragment.selection_set)

    for selection_set in selection_sets:
        walk(selection_set)
    out = []
    for key, nodes in grouped.items():
        name = nodes[0].name.value
        definition = None if name == "__typename" else parent.fields.get(name)
        children: tuple[Selection, ...] = ()
        if definition is not None:
            named = get_named_type(definition.type)
            below = [n.selection_set for n in nodes if n.selection_set is not None]
            if below and isinstance(named, GraphQLObjectType):
                children = _collect(schema, named, below, doc, variables)
        out.append(Selection(key, name, nodes[0], definition, children))
    return tuple(out)
