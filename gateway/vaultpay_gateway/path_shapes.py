"""REST paths that leave a path variable empty, and the RPC the transcoder routes them to.

The transcoder's path matcher drops trailing empty segments (`/v1/transactions/reference/`
is matched as `/v1/transactions/reference`). Where the contract has both
`GET /v1/transactions/reference/{reference_id}` and `GET /v1/transactions/{transaction_id}`,
a lookup by reference with an empty reference is routed to `GetTransaction` with
`transaction_id = "reference"`, and the client is told that its *transaction id* is invalid.
The gateway answers such requests itself (400, naming the empty field), from a table built
here and checked by the JSON body check after the transcoder has chosen the RPC (`json_body`).

Only the misrouted shapes are listed: a template's literal prefix (all its segments before
its last one, which is a variable) that another binding of the same method matches by
binding one of its variables to a literal of the prefix. Prefixes that a literal-only
template matches are a collection with a trailing slash (`GET /v1/admin/kyc/` lists
submissions) and stay served; prefixes that nothing matches get the transcoder's 404.

    shapes = empty_variable_shapes(load_contract(Path("build/vaultpay.binpb")))
    # [EmptyVariable(method='GET', path='/v1/transactions/reference',
    #                field='referenceId', rpc='vaultpay.transfer.v1.TransferService.…', …)]

Templates with variables that are not one whole segment (`{name=shelves/*}`, `**`) are left
out, as the shape of the path they leave empty is not one string; the contract has none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vaultpay_gateway.contract import ApiContract, ContractError, Rpc

__all__ = [
    "EmptyVariable",
    "Template",
    "empty_variable_shapes",
    "json_field_path",
    "parse_template",
]

_WHOLE_SEGMENT_VARIABLE = re.compile(r"\{([A-Za-z_][\w.]*)(?:=\*)?\}")


@dataclass(frozen=True, slots=True)
class EmptyVariable:
    """`method path` (trailing slashes removed, `:verb` kept) is `rpc`'s binding with its
    last path variable (`field`, JSON path; `proto_field`, proto path) left empty."""

    method: str
    path: str
    field: str
    proto_field: str
    rpc: str


@dataclass(frozen=True, slots=True)
class Template:
    """A path template as segments: a literal string, or None for a one-segment variable
    (`variables` holds their field paths in order), and the custom verb (`""`: none)."""

    segments: tuple[str | None, ...]
    variables: tuple[str, ...]
    verb: str


def parse_template(template: str) -> Template | None:
    """`/v1/a/{b}:verb` -> Template(("v1", "a", None), ("b",), "verb"); None for templates
    with variables this module does not model."""
    path, verb = template, ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and not last.endswith("}"):
        path, _, verb = template.rpartition(":")
    segments: list[str | None] = []
    variables: list[str] = []
    for segment in path.removeprefix("/").split("/"):
        match = _WHOLE_SEGMENT_VARIABLE.fullmatch(segment)
        if match is not None:
            segments.append(None)
            variables.append(match.group(1))
        elif "{" in segment or "}" in segment or "*" in segment:
            return None
        else:
            segments.append(segment)
    return Template(tuple(segments), tuple(variables), verb)


def _matches(template: Template, literals: tuple[str, ...], verb: str) -> bool:
    if template.verb != verb or len(template.segments) != len(literals):
        return False
    return all(
        s is None or s == literal for s, literal in zip(template.segments, literals, strict=True)
    )


def json_field_path(contract: ApiContract, message: str, proto_path: str) -> str:
    """`amount.currency_code` of `message` -> `amount.currencyCode` (each field's json_name)."""
    names: list[str] = []
    current: str | None = message
    for part in proto_path.split("."):
        field = contract.message(current).field(part) if current is not None else None
        if field is None:
            raise ContractError(f"{message} has no field {proto_path!r} (path template)")
        names.append(field.json_name)
        current = field.message_type
    return ".".join(names)


def _bindings(rpcs: tuple[Rpc, ...]) -> list[tuple[str, Template, Rpc]]:
    found = []
    for rpc in rpcs:
        for binding in rpc.http:
            template = parse_template(binding.template)
            if template is not None:
                found.append((binding.method, template, rpc))
    return found


def empty_variable_shapes(contract: ApiContract) -> tuple[EmptyVariable, ...]:
    """Every misrouted empty-variable path of the routed RPCs (see the module docstring)."""
    bindings = _bindings(contract.routed_rpcs())
    shapes: dict[tuple[str, str], EmptyVariable] = {}
    for method, template, rpc in bindings:
        *prefix, last = template.segments
        if last is not None or any(s is None for s in prefix):
            continue
        literals = tuple(s for s in prefix if s is not None)
        matched = [
            other
            for other_method, other, _ in bindings
            if other_method == method and _matches(other, literals, template.verb)
        ]
        # Nothing matches: the transcoder answers 404. A literal-only match: a collection
        # with a trailing slash, which is served as itself.
        if not matched or any(not other.variables for other in matched):
            continue
        path = "/" + "/".join(literals) + (f":{template.verb}" if template.verb else "")
        proto_field = template.variables[-1]
        shapes.setdefault(
            (method, path),
            EmptyVariable(
                method,
                path,
                json_field_path(contract, rpc.input_type, proto_field),
                proto_field,
                rpc.full_name,
            ),
        )
    return tuple(shapes[key] for key in sorted(shapes))
