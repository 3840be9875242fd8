"""The parameters of an EC2 Query request, as EC2 encodes them.

Scalars are `Name=value`; lists are numbered members `InstanceId.1=...&InstanceId.2=...`;
structures are members with fields, at any depth: `Filter.1.Name=state&Filter.1.Value.1=running`,
`TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=k`. A handler reads what
it needs through `Params`; a wrong value raises EC2's InvalidParameterValue, a missing required
one MissingParameter, each naming the parameter as the client sent it:

    ids = params.list("InstanceId")
    for member in params.members("Filter"):          # each member is a Params too
        name, values = member.string("Name", required=True), member.list("Value")
    count = params.integer("MaxCount", required=True, minimum=1, maximum=100)
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from cloudctl import ids
from cloudctl.api.errors import ApiError, invalid_value, malformed, missing_parameter, short
from cloudctl.errors import InputError

T = TypeVar("T")
_INDEX = re.compile(r"^[1-9][0-9]{0,5}$")
Kinds = str | tuple[str, ...]  # an id's kind ("volume"), or kinds (("image", "kernel"))


class Params:
    """Request parameters (a mapping of names to strings) below a prefix ("" for the whole
    request, "Filter.1." for a member)."""

    def __init__(self, values: Mapping[str, str], prefix: str = "") -> None:
        self._values = dict(values)
        self.prefix = prefix

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def names(self) -> list[str]:
        return sorted(self._values)

    def full_name(self, name: str) -> str:
        """The parameter's name as the client sent it (for messages)."""
        return self.prefix + name

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        default: str | None = None,
        choices: Iterable[str] | None = None,
        max_length: int | None = None,
    ) -> str | None:
        value = self._values.get(name)
        if value is None or (required and value == ""):
            if required:
                raise missing_parameter(self.full_name(name))
            return default
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise invalid_value(
                    self.full_name(name), value, f"Expecting one of: {', '.join(allowed)}."
                )
        if max_length is not None and len(value) > max_length:
            raise invalid_value(
                self.full_name(name), short(value), f"It is longer than {max_length} characters."
            )
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        text = self.string(name, required=required)
        if text is None:
            return default
        if not re.fullmatch(r"-?[0-9]{1,18}", text.strip()):
            raise invalid_value(self.full_name(name), short(text), "Expecting a whole number.")
        value = int(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = {
                (True, True): f"between {minimum} and {maximum}",
                (True, False): f"of at least {minimum}",
                (False, True): f"of at most {maximum}",
            }[(minimum is not None, maximum is not None)]
            raise invalid_value(self.full_name(name), text, f"Expecting a value {bounds}.")
        return value

    def boolean(self, name: str, *, default: bool = False) -> bool:
        text = self.string(name)
        if text is None:
            return default
        if text.lower() not in ("true", "false"):
            raise invalid_value(self.full_name(name), short(text), "Expecting true or false.")
        return text.lower() == "true"

    def list(self, name: str, *, required: bool = False) -> list[str]:
        """The values of `Name.1`, `Name.2`, ... in the order of their numbers."""
        values = [self._values[key] for key in self._member_keys(name, scalar=True)]
        if required and not values:
            raise missing_parameter(self.full_name(f"{name}.1"))
        return values

    def resource_id(self, name: str, kind: Kinds, *, required: bool = False) -> str | None:
        """An id of a kind ("volume": vol-XXXXXXXX) or of one of kinds, normalized; EC2's
        Malformed code (of the first kind) when the text is not one."""
        text = self.string(name, required=required)
        return None if text is None else resource_id(text, kind)

    def resource_ids(self, name: str, kind: Kinds) -> list[str]:
        """`Name.N` ids of a kind, as resource_id checks one."""
        return [resource_id(text, kind) for text in self.list(name)]

    def members(self, name: str) -> list[Params]:
        """The structures `Name.N.Field...`, each as a Params over its fields, in order."""
        return [
            Params(
                {k[len(key) + 1 :]: v for k, v in self._values.items() if k.startswith(key + ".")},
                prefix=self.full_name(key + "."),
            )
            for key in self._member_keys(name, scalar=False)
        ]

    def filters(self) -> dict[str, list[str]]:
        """EC2's `Filter.N.Name` + `Filter.N.Value.M`: name -> values (one name given twice
        has the values of both)."""
        found: dict[str, list[str]] = {}
        for member in self.members("Filter"):
            name = member.string("Name", required=True)
            values = member.list("Value")
            if not values:
                raise missing_parameter(member.full_name("Value.1"))
            found.setdefault(name, []).extend(values)
        return found

    def tag_specifications(self) -> dict[str, dict[str, str]]:
        """`TagSpecification.N.ResourceType` + `.Tag.M.Key`/`.Value`: resource type -> tags."""
        specs: dict[str, dict[str, str]] = {}
        for member in self.members("TagSpecification"):
            rtype = member.string("ResourceType", required=True)
            tags = specs.setdefault(rtype, {})
            for tag in member.members("Tag"):
                key = tag.string("Key", required=True, max_length=128)
                tags[key] = tag.string("Value", default="", max_length=256)
        return specs

    def _member_keys(self, name: str, *, scalar: bool) -> list[str]:
        """`Name.N` for every N present (as `Name.N` itself, or as `Name.N.Field` when not
        scalar), sorted by N; a member number that is not a positive number is refused."""
        numbers: set[int] = set()
        head = name + "."
        for key in self._values:
            if not key.startswith(head):
                continue
            index, dot, _ = key[len(head) :].partition(".")
            if not _INDEX.match(index):
                raise invalid_value(
                    self.full_name(key), short(self._values[key]),
                    f"The member number of {self.full_name(name)} must be a positive number.",
                )  # fmt: skip
            if bool(dot) != scalar:
                numbers.add(int(index))
        return [f"{name}.{n}" for n in sorted(numbers)]


def resource_id(text: str, kind: Kinds) -> str:
    """The id of a kind (or kinds) in `text`, normalized (ids.parse_id); EC2's Malformed code
    if none."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    try:
        return ids.parse_id(text, kinds)
    except InputError:
        raise malformed(kinds[0], text) from None


# --- filters ------------------------------------------------------------------------------

Field = Callable[[Any], "str | Iterable[str] | None"]


def filter_items(
    items: Iterable[T],
    filters: Mapping[str, Sequence[str]],
    fields: Mapping[str, Field],
    tags: Callable[[T], Mapping[str, str]] | None = None,
) -> list[T]:
    """The items every filter matches, as EC2 filters: an item matches a filter when one of
    its values for the filter's name matches one of the filter's values (`*` and `?` are
    wildcards). `fields` gives each filter name's value(s) of an item; with `tags`, the names
    `tag:KEY`, `tag-key` and `tag-value` work too. An unknown filter name is refused."""
    getters: dict[str, Field] = {}
    for name in filters:
        getter = fields.get(name) or (_tag_field(name, tags) if tags else None)
        if getter is None:
            known = sorted(fields) + (["tag:KEY", "tag-key", "tag-value"] if tags else [])
            raise ApiError(
                "InvalidParameterValue",
                f"The filter '{name}' is invalid (filters: {', '.join(known)})",
            )
        getters[name] = getter
    patterns = {name: [_wildcard(v) for v in values] for name, values in filters.items()}
    return [
        item
        for item in items
        if all(
            any(p.fullmatch(v) for p in patterns[name] for v in _values(getters[name](item)))
            for name in filters
        )
    ]


def _tag_field(name: str, tags: Callable[[Any], Mapping[str, str]]) -> Field | None:
    if name.startswith("tag:"):
        return lambda item: tags(item).get(name[4:])
    if name == "tag-key":
        return lambda item: list(tags(item))
    if name == "tag-value":
        return lambda item: list(tags(item).values())
    return None


def _values(value: Any) -> list[str]:
    """A field's value(s) as filter text (booleans as EC2 writes them: true/false)."""
    if value is None:
        return []
    if isinstance(value, str | bool | int):
        value = [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]


def _wildcard(pattern: str) -> re.Pattern[str]:
    """EC2's filter values: `*` any run of characters, `?` one, `\\` escapes either."""
    regex = []
    for token in re.findall(r"\\[*?\\]|\*|\?|[^*?\\]+|\\", pattern):
        if token == "*":
            regex.append(".*")
        elif token == "?":
            regex.append(".")
        else:
            regex.append(re.escape(token[1:] if len(token) == 2 and token[0] == "\\" else token))
    return re.compile("".join(regex), re.DOTALL)


# --- pagination ---------------------------------------------------------------------------


def paginate(
    params: Params,
    items: Sequence[T],
    key: Callable[[T], str],
    *,
    minimum: int = 5,
    maximum: int = 1000,
) -> tuple[list[T], str | None]:
    """One page of `items` by EC2's MaxResults + NextToken: (page, next token or None).

    Items are ordered by `key` (a resource's id); a token names the key the next page starts
    after, so a page stays right when items come and go between calls. Without MaxResults,
    everything after the token."""
    limit = params.integer("MaxResults", minimum=minimum, maximum=maximum)
    ordered = sorted(items, key=key)
    token = params.string("NextToken")
    if token:
        after = _token_key(token)
        ordered = [item for item in ordered if key(item) > after]
    if limit is None or len(ordered) <= limit:
        return ordered, None
    page = ordered[:limit]
    return page, _make_token(key(page[-1]))


def _make_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def _token_key(token: str) -> str:
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
        if isinstance(after, str):
            return after
    except (ValueError, TypeError, KeyError):
        pass
    raise ApiError("InvalidPaginationToken", f"The token '{short(token)}' is invalid")
