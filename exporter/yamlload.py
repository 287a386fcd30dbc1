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
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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
