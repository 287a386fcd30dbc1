"""Strict, bounded YAML reading for the config file: any text in, a Python document or
`YamlProblem` out.

`yaml.safe_load` alone is not enough for a file anyone may hand us:
- duplicate keys silently keep the last value (`rdap:` twice drops half the settings);
- the composer and constructor recurse, so a 10,000-deep document raises RecursionError;
- an alias bomb ("billion laughs") is a small file whose expansion has 10^9 nodes: PyYAML builds it
  with shared objects, but any walk over it (validation, an error message's repr) never ends;
- a 5,000-digit integer or a 13th month raise ValueError from inside the constructor.

So reading is three bounded steps: (1) stream the parser's events (an iterative state machine in
both libyaml and PyYAML) to bound nesting depth before anything recursive runs; (2) compose the
node graph and walk it iteratively to find duplicate keys (with their key path), recursive aliases
and the size the document would have once aliases are expanded; (3) construct Python objects with
constructors that turn every value error into a YAML error at its line.

Those steps cost ~25 s for a 100,000-domain file, so a document takes a fast reader first, and
a fast reader may decline any document, in which case the next one reads it from the start:
- `_fast_block`: block-style text (what generated and most written configs are), one regex per
  line and an indentation stack, no libyaml at all (~0.7 s at 100k domains);
- `_fast_load`: any other text libyaml reads, in one pass over its events, building the Python
  document directly (no node graph) with the three steps' bounds inline, anchors, aliases and
  merge keys included (~2.5 s);
- the three checked steps: tags, complex or duplicate keys, anything in doubt and every error,
  so every error keeps its wording.
What a fast reader returns equals what the checked steps return, down to the types and the
objects aliases share; tests/test_yamlload_fast.py holds them to that.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.gcpause import gc_paused

# libyaml parses ~10x faster; PyYAML's own parser is the fallback and gives the better wording
# for syntax errors, so errors are re-read with it (speed no longer matters then).
_FAST_BASE: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64  # a config is ~6 levels deep; the bound keeps recursive code far from the limit
MAX_EXPANDED_NODES = 20_000_000  # ~1M domains with contacts; an alias bomb is 10^9 (sizes memoised)
MAX_NUMBER_CHARS = 100  # longer integers are a typo or an attack, never a setting
_MERGE_TAG = "tag:yaml.org,2002:merge"
_REWORD_LIMIT = 1_000_000  # PyYAML reads ~1 MB/s: larger broken files keep libyaml's wording


class YamlProblem(Exception):
    """The text is not a document we accept; `lines` are 'where: what' messages."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _strict_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    class Strict(base):  # type: ignore[valid-type,misc]
        def construct_object(self, node: Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except yaml.YAMLError:
                raise
            except Exception as exc:
                # PyYAML's constructors trust the resolver: `!!timestamp x` is AttributeError,
                # `!!int ''` IndexError, 2020-13-45 ValueError. All are a bad value at a line.
                reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
                raise ConstructorError(
                    None, None, f"unreadable value ({reason})", node.start_mark
                ) from exc

        def construct_yaml_int(self, node: ScalarNode) -> int:
            # Python refuses > 4300 digits with ValueError; long before that it is no setting.
            if len(str(node.value)) > MAX_NUMBER_CHARS:
                raise ConstructorError(
                    None, None, f"number longer than {MAX_NUMBER_CHARS} digits", node.start_mark
                )
            return int(super().construct_yaml_int(node))

    Strict.add_constructor("tag:yaml.org,2002:int", Strict.construct_yaml_int)
    return Strict


_FastLoader = _strict_loader(_FAST_BASE)
_PyLoader = _strict_loader(yaml.SafeLoader)


def load(text: str) -> object:
    """Parse one YAML document strictly. Raises YamlProblem, never anything else for any text."""
    with gc_paused():
        document = _fast_block(text)
        if document is _FALLBACK:
            document = _fast_load(text)
        if document is not _FALLBACK:
            return document
        return _checked_load(text)


def _checked_load(text: str) -> object:
    """The three bounded steps, and the error wording for everything they refuse."""
    try:
        return _load(text, _FastLoader)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "")):
            # libyaml's own bound (1000) hit while scanning ahead of our event check.
            where = _line(getattr(exc, "problem_mark", None))
            raise YamlProblem([f"{where}: nested deeper than {MAX_DEPTH} levels"]) from None
        if len(text) > _REWORD_LIMIT:
            raise YamlProblem([_describe(exc)]) from None
        # The same verdict from the pure-Python reader, in its clearer words.
        raise YamlProblem([_describe_error_of(text, _PyLoader, _describe(exc))]) from None
    except RecursionError:  # belt and braces: the depth bound should make this unreachable
        raise YamlProblem(["document nested too deeply"]) from None
    except MemoryError:
        raise YamlProblem(["document too large"]) from None


def _describe_error_of(text: str, loader: type[yaml.SafeLoader], fallback: str) -> str:
    try:
        _load(text, loader)
    except YamlProblem as exc:
        return "; ".join(exc.lines)
    except yaml.YAMLError as exc:
        return _describe(exc)
    except (RecursionError, MemoryError, ValueError):
        return fallback
    # libyaml refused what PyYAML accepts (they differ in corner cases): still an error.
    return fallback


def _describe(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"character {exc.position + 1}: invalid YAML: "
            f"unacceptable character #x{exc.character:04x}"
            if isinstance(exc.character, int)
            else f"character {exc.position + 1}: invalid YAML: {exc.reason}"
        )
    mark = getattr(exc, "problem_mark", None)
    where = f"{_line(mark)}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}invalid YAML: {problem}"


def _load(text: str, loader_class: type[yaml.SafeLoader]) -> object:
    _check_depth(text, loader_class)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _check_graph(node, loader)
        if problems:
            raise YamlProblem(problems)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_depth(text: str, loader_class: type[yaml.SafeLoader]) -> None:
    loader = loader_class(text)
    try:
        depth = 0
        while loader.check_event():
            event = loader.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise YamlProblem(
                        [f"{_line(event.start_mark)}: nested deeper than {MAX_DEPTH} levels"]
                    )
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_graph(root: Node, loader: yaml.SafeLoader) -> list[str]:
    """Duplicate keys (with their path), recursive aliases, and the expanded size, without
    recursion. Nodes shared through aliases are visited once; sizes are memoised per node."""
    problems: list[tuple[int, str]] = []
    size: dict[int, int] = {}
    on_path: set[int] = set()
    # Post-order DFS: (node, path, children_done).
    stack: list[tuple[Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_EXPANDED_NODES:
                return [
                    f"{_line(node.start_mark)}: document expands to more than "
                    f"{MAX_EXPANDED_NODES:,} values (alias bomb?)"
                ]
            continue
        if key in size:
            continue
        if key in on_path:
            return [f"{_line(node.start_mark)}: recursive alias ({path or 'top level'})"]
        on_path.add(key)
        stack.append((node, path, True))
        if isinstance(node, MappingNode):
            problems.extend(_duplicates(node, path, loader))
            for k, v in node.value:
                stack.append((k, path, False))
                stack.append((v, _join(path, _key_text(k)), False))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                stack.append((item, f"{path}[{i}]", False))
    return [message for _line_no, message in sorted(problems)]  # in file order


def _duplicates(node: MappingNode, path: str, loader: yaml.SafeLoader) -> list[tuple[int, str]]:
    seen: dict[object, Node] = {}
    out: list[tuple[int, str]] = []
    for key_node, _value in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue  # complex keys fail at construction; merges may override on purpose
        try:
            key = loader.construct_object(key_node, deep=True)
            hash(key)
        except (yaml.YAMLError, TypeError):
            # PyYAML leaves a failed node marked "in construction"; unmark it so the real
            # construction reports the actual problem, not a recursive node.
            loader.recursive_objects.pop(key_node, None)
            continue
        if key in seen:
            first = seen[key].start_mark
            line = key_node.start_mark.line + 1
            out.append(
                (
                    line,
                    f"{_join(path, _key_text(key_node))}: duplicate key "
                    f"(line {line}, first at line {first.line + 1})",
                )
            )
        else:
            seen[key] = key_node
    return out


_PLAIN_KEY = re.compile(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029'\"]{1,60}$")


def _key_text(node: Node) -> str:
    """A key as typed when plain, else quoted and cut: error lines stay one short line."""
    if not isinstance(node, ScalarNode):
        return "?"
    text = str(node.value)
    if _PLAIN_KEY.fullmatch(text):
        return text
    return repr(text[:60]) + ("..." if len(text) > 60 else "")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# The fast path. -----------------------------------------------------------------------------

_FALLBACK: Any = object()  # _fast_load's answer when the checked path must read the text
_NO_KEY: Any = object()  # a mapping waits for its next key
_MERGE: Any = object()  # a `<<` key


class _Unsure(Exception):
    """The fast path cannot vouch for this document (or it is wrong): read it the checked way."""


# Implicit tags whose (strict) constructors the fast path calls, so the number bound and every
# value check hold; any other resolved tag (merge `<<`, value `=`) is left to the checked path.
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp")
)
# BaseResolver.resolve's lookup for a plain scalar: by its first character ('' for the empty
# value). Wildcard and path resolvers (SafeLoader has neither) would make that lookup wrong, so
# they turn the fast paths off.
_RESOLVERS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    ch: tuple(found) for ch, found in _FastLoader.yaml_implicit_resolvers.items() if ch is not None
}
_FAST_PATH = not _FastLoader.yaml_path_resolvers and not _FastLoader.yaml_implicit_resolvers.get(
    None
)


def _fast_load(text: str) -> object:
    """The document, or _FALLBACK. Equal to what _checked_load returns (values, types, and the
    objects aliases share) whenever it is not _FALLBACK; tests/test_yamlload_fast.py checks."""
    if not _FAST_PATH:
        return _FALLBACK
    loader = _FastLoader(text)
    try:
        return _build(loader)
    except Exception:  # _Unsure, any YAMLError, MemoryError: the checked path has the words
        return _FALLBACK
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader) -> object:
    """One pass over the event stream, no recursion: _check_depth's bound, _check_graph's
    (duplicate keys, recursive aliases, expanded size) and construction, inline. Merge keys
    (`<<: *defaults`) as SafeConstructor.flatten_mapping does them: the merged pairs first, in
    order, then the mapping's own keys, which override merged ones. flatten_mapping drops a key
    merged twice when both come from one string object (one node, or any one-character key)
    and keeps the later one otherwise; rather than mirror that, a key merged twice falls back,
    and so does merging a mapping that overrode a merged key (its node holds the key twice)."""
    get_event = loader.get_event
    resolvers = _RESOLVERS
    anchors: dict[str, tuple[object, int]] = {}  # anchor -> (object, expanded size)
    constructed: dict[str, object] = {}  # plain text -> non-str value (immutable: shared)
    keys: dict[str, str] = {}  # one string per distinct key: 100k domains share "name"
    # Open containers above the current one: (container, its key awaiting a value, anchor,
    # expanded size before it started, pairs merged into it).
    stack: list[tuple[Any, Any, str | None, int, list[Any] | None]] = []
    container: Any = None  # the dict or list being filled; None at the top
    key: Any = _NO_KEY
    merged: list[Any] | None = None  # the current mapping's merged pairs, if it has `<<`
    overriding: set[int] = set()  # ids of mappings whose own keys overrode merged ones
    total = 0  # values once aliases are expanded, keys included (_check_graph's size)
    document: object = None

    if type(get_event()) is not StreamStartEvent:  # type: ignore[no-untyped-call]
        raise _Unsure
    kind = type(get_event())  # type: ignore[no-untyped-call]
    if kind is StreamEndEvent:
        return None  # no document at all (empty text, only comments)
    if kind is not DocumentStartEvent:
        raise _Unsure
    while True:
        event = get_event()  # type: ignore[no-untyped-call]
        kind = type(event)
        if kind is ScalarEvent:
            if event.tag is not None:
                raise _Unsure
            value = event.value
            if event.implicit[0]:  # plain: resolved by its text, as BaseResolver.resolve does
                for tag, regexp in resolvers.get(value[:1], ()):
                    if regexp.match(value):
                        if tag == _MERGE_TAG:
                            value = _MERGE
                            break
                        text = value
                        value = constructed.get(text, _NO_KEY)
                        if value is _NO_KEY:
                            value = constructed[text] = _construct(loader, tag, text)
                        break
            total += 1
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise _Unsure
                anchors[event.anchor] = (value, 1)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None or len(stack) >= MAX_DEPTH:
                raise _Unsure
            if key is _NO_KEY and type(container) is dict:
                raise _Unsure  # a complex key
            stack.append((container, key, event.anchor, total, merged))
            total += 1
            container = {} if kind is MappingStartEvent else []
            key = _NO_KEY
            merged = None
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            value = container
            if merged is not None:
                own = list(value.items())
                value.clear()
                value.update(merged)
                if len(value) != len(merged):
                    raise _Unsure  # a key merged twice
                for name, item in own:
                    if name in value:
                        overriding.add(id(value))
                    value[name] = item
            container, key, anchor, before, merged = stack.pop()
            if anchor is not None:
                if anchor in anchors:
                    raise _Unsure
                anchors[anchor] = (value, total - before)
        elif kind is AliasEvent:
            # Unknown, or its node is still open (a recursive alias): both are errors.
            value, size = anchors[event.anchor]
            total += size
            if total > MAX_EXPANDED_NODES:
                raise _Unsure
        elif kind is DocumentEndEvent:
            break
        else:
            raise _Unsure
        if value is _MERGE and (key is not _NO_KEY or type(container) is not dict):
            raise _Unsure  # `<<` as a value: an error
        if type(container) is dict:
            if key is _MERGE:
                if merged is None:
                    merged = []
                sources = [value] if type(value) is dict else value
                if type(sources) is not list:
                    raise _Unsure  # not a mapping or a list of mappings: an error
                for source in sources:
                    if type(source) is not dict or id(source) in overriding:
                        raise _Unsure
                    merged.extend(source.items())
                key = _NO_KEY
            elif key is not _NO_KEY:
                container[key] = value
                key = _NO_KEY
            elif kind is not ScalarEvent or event.anchor is not None:
                raise _Unsure  # an alias or anchored key (rare)
            elif value is _MERGE:
                key = _MERGE
            elif value in container:
                raise _Unsure  # a duplicate key: the checked path says where
            else:
                key = keys.setdefault(value, value) if type(value) is str else value
        elif container is not None:
            container.append(value)
        else:
            document = value
    if total > MAX_EXPANDED_NODES or type(get_event()) is not StreamEndEvent:  # type: ignore[no-untyped-call]
        raise _Unsure  # too large, or a second document
    return document


# The fastest path: block-style documents, line by line. ------------------------------------
#
# Generated configs (and most written ones) are block mappings and sequences of plain or simply
# quoted scalars, one per line. For those, one regex per line and an indentation stack build the
# document several times faster than libyaml's event objects can even be created. The subset is
# narrow on purpose: no anchors, tags, block scalars, multi-line scalars, quoted keys, escapes,
# nested flow collections, tabs or line breaks other than LF; any line outside it, or any doubt
# about indentation, hands the whole text to the event path. tests/test_yamlload_fast.py compares
# both with the checked path.

# Printable non-ASCII characters (what libyaml's reader accepts) that are not a line break
# (U+2028, U+2029) or a byte order mark (skipped at a line's start); NEL and C1 are below U+A0.
_U = r"\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff"
_NOT_SUBSET = re.compile(rf"[^\n -~{_U}]")
# A plain scalar: no indicator first, no ": " or " #" inside, no trailing spaces. Possessive
# quantifiers: the line regex runs 400,000 times for 100k domains, and must never backtrack.
_PLAIN = (
    rf"(?:[A-Za-z0-9_./~+({_U}]|-(?=[A-Za-z0-9.]))"
    rf"[!-9;-~{_U}]*+(?:(?::(?=[!-~{_U}])| +(?=[!-\"$-9;-~{_U}]))[!-9;-~{_U}]*+)*+"
)
_SQ = rf"'[ -&(-~{_U}]*+'"  # no quote inside (no '' escape)
_DQ = rf'"[ !#-\[\]-~{_U}]*+"'  # no quote, no backslash escape
# libyaml refuses simple keys longer than 1024 characters; "..." first would end the document.
_KEY = r"(?:[A-Za-z0-9_]|\.(?!\.\.))[A-Za-z0-9_.-]{0,999}+"
# Inside [...] and {...}: quoted, or plain without flow indicators, ':', '#' or spaces.
_FLOW_ITEM = rf"(?:{_SQ}|{_DQ}|[A-Za-z0-9_./~{_U}][A-Za-z0-9_./~+@={_U}-]*+)"
_FLOW_PAIR = rf"{_KEY}: +{_FLOW_ITEM}"
_VALUE = (
    rf"(?:{_PLAIN}|{_SQ}|{_DQ}|\[ *(?:{_FLOW_ITEM}(?: *, *{_FLOW_ITEM})*)? *\]"
    rf"|\{{ *(?:{_FLOW_PAIR}(?: *, *{_FLOW_PAIR})*)? *\}})"
)
# (indent)(- )(key): (value) # comment, and the line's end. Lines are matched in place, not
# split off: the 400,000 strings would be 27 MB of the peak. Anchored at each line's start (a
# search would retry every position of a long line that does not match: quadratic).
_LINE_AT = re.compile(
    rf"( *+)(-(?: ++|$))?(?:({_KEY}):(?: ++|$))?({_VALUE})?+(?: *(?<![^ \n])#.*| *)(?:\n|\Z)",
    re.MULTILINE,
).match
# The items of a flow collection the line regex accepted: (key): 'single' "double" bare.
_FLOW_ITEMS = re.compile(r"(?:([^ ,:'\"]+): +)?(?:'([^']*)'|\"([^\"]*)\"|([^ ,]+))").finditer
_NOT_PLAIN = frozenset("'\"[{")


def _fast_block(text: str) -> object:
    """The document, or _FALLBACK; like _fast_load, equal to _checked_load's when not."""
    # No aliases here, so the expanded size is at most the number of characters.
    if not _FAST_PATH or len(text) >= MAX_EXPANDED_NODES or _NOT_SUBSET.search(text):
        return _FALLBACK
    loader = _FastLoader("")  # for its constructors
    try:
        return _block(text, loader)
    except Exception:  # _Unsure; a constructor's error; MemoryError
        return _FALLBACK
    finally:
        loader.dispose()


def _block(text: str, loader: yaml.SafeLoader) -> object:
    resolvers = _RESOLVERS
    # Plain text -> value, for texts whose first character has implicit resolvers: repeated
    # names ("ns1...", "true") are resolved once and share one object.
    plains: dict[str, object] = {}
    keys: dict[str, object] = {}  # key text -> key: 100k domains share one "name"
    flows: dict[str, tuple[Any, ...]] = {}  # "[a, b]" -> its values, "{k: v}" -> its pairs

    def plain(text: str) -> object:
        value = plains.get(text, _NO_KEY)
        if value is _NO_KEY:
            value = text
            for tag, regexp in resolvers.get(text[:1], ()):
                if regexp.match(text):
                    value = _construct(loader, tag, text)
                    break
            plains[text] = value
        return value

    def scalar(text: str) -> object:
        first = text[0]
        if first == "'" or first == '"':
            return text[1:-1]
        if first != "[" and first != "{":
            return plain(text)
        items = flows.get(text)
        if items is None:
            pairs = [
                (
                    None if key is None else plain(key),
                    sq if sq is not None else dq if dq is not None else plain(bare),
                )
                for key, sq, dq, bare in (m.groups() for m in _FLOW_ITEMS(text, 1, len(text) - 1))
            ]
            items = flows[text] = tuple((value for _key, value in pairs) if first == "[" else pairs)
        # A collection of its own each time, as the checked path builds (list() of a tuple
        # allocates no spare room).
        if first == "[":
            return list(items)
        mapping = dict(items)
        if len(mapping) != len(items):
            raise _Unsure  # a duplicate key
        return mapping

    special = _NOT_PLAIN.union(resolvers)  # first characters that need more than the text
    # Open containers below the current one: (indent, container, is mapping, compact). A
    # compact sequence ("key:" then "- item" at the key's own indent) ends at the next key.
    stack: list[tuple[int, Any, bool, bool]] = []
    document: Any = None
    current: Any = None
    indent = 0
    is_map = True
    compact = False
    # "key:" or "-" with nothing after it: a nested block follows, or the value is null.
    pending = False
    pending_key: Any = None
    pending_indent = 0
    match = _LINE_AT
    end, size = 0, len(text)
    while end < size:
        m = match(text, end)
        if m is None:
            raise _Unsure  # a line outside the subset
        end = m.end()
        spaces, dash, key, value = m.groups()
        if key is None and value is None and dash is None:
            continue  # blank or comment
        at = len(spaces)
        if pending:
            pending = False
            if at > pending_indent or (dash is not None and at == pending_indent and is_map):
                if dash is None and key is None:
                    raise _Unsure  # a scalar on a line of its own (a multi-line scalar)
                if len(stack) >= MAX_DEPTH - 3:
                    raise _Unsure  # (a flow sequence inside counts one more)
                nested: Any = [] if dash is not None else {}
                if is_map:
                    current[pending_key] = nested
                else:
                    current.append(nested)
                stack.append((indent, current, is_map, compact))
                compact = dash is not None and at == pending_indent
                current, indent, is_map = nested, at, dash is None
            elif is_map:
                current[pending_key] = plain("")
            else:
                current.append(plain(""))
        elif current is None:  # the first line: the document is a block mapping at column 0
            if at or dash is not None or key is None:
                raise _Unsure
            document = current = {}
        while at < indent or (compact and at == indent and dash is None):
            indent, current, is_map, compact = stack.pop()
        if at != indent:
            raise _Unsure
        if dash is not None:
            if is_map:
                raise _Unsure
            if key is None:
                if value is None:
                    pending, pending_indent = True, at
                elif value[0] in special:
                    current.append(scalar(value))
                else:
                    current.append(value)
                continue
            if len(stack) >= MAX_DEPTH - 3:
                raise _Unsure
            item: dict[Any, Any] = {}  # "- key: ...": a mapping at the key's column
            current.append(item)
            stack.append((indent, current, is_map, compact))
            current, indent, is_map, compact = item, at + len(dash), True, False
        elif key is None or not is_map:
            raise _Unsure
        name = keys.get(key, _NO_KEY)
        if name is _NO_KEY:
            name = keys[key] = plain(key)
        if name in current:
            raise _Unsure  # a duplicate key: the checked path says where
        if value is None:
            pending, pending_key, pending_indent = True, name, indent
        elif value[0] in special:
            current[name] = scalar(value)
        else:
            current[name] = value
    if pending:
        if is_map:
            current[pending_key] = plain("")
        else:
            current.append(plain(""))
    return document


def _construct(loader: yaml.SafeLoader, tag: str, text: str) -> object:
    """A plain scalar that is not a string, by the strict loader's constructor for its tag (so
    the number bound and every value check hold)."""
    if tag not in _SCALAR_TAGS:
        raise _Unsure
    return loader.yaml_constructors[tag](loader, ScalarNode(tag, text, None, None))
