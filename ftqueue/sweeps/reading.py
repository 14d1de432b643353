"""A sweep file's text read into Python values within bounds: its size, its encoding, its
nesting and how far its YAML aliases expand are checked before the values are built."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ftqueue.errors import SweepFileError

#: The largest sweep file read: a real one is a few hundred bytes.
MAX_BYTES = 1024 * 1024
#: The most YAML nodes a file may hold once its aliases are expanded: an alias names a node
#: already built, so a few lines of them stand for millions of values (a "billion laughs").
MAX_NODES = 100_000


def read(path: Path) -> Any:
    """The parsed YAML or TOML of ``path``; SweepFileError for what cannot be one."""
    where = str(path)
    try:
        with path.open("rb") as f:
            # Read one byte past the limit, not the file's stated size: a pipe or a device
            # has none, and a file that never ends would be read until memory runs out.
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SweepFileError(f"{where}: cannot read it ({exc.strerror}): check the path") from None
    if len(data) > MAX_BYTES:
        raise SweepFileError(f"{where}: larger than 1 MiB: a sweep file is a few keys, check it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SweepFileError(
            f"{where}: not UTF-8 text (byte {exc.start}): save it as UTF-8 YAML or TOML"
        ) from None
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(text)
        return _yaml(text, where)
    except RecursionError:
        raise SweepFileError(f"{where}: nested too deeply: a sweep file is a few levels") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        # PyYAML's errors, and numbers too long for Python to convert (ValueError).
        detail = " ".join(str(exc).split())
        if len(detail) > 200:
            detail = detail[:200] + "..."
        raise SweepFileError(f"{where}: not valid YAML/TOML: {detail}") from None


def _yaml(text: str, where: str) -> Any:
    import yaml

    try:
        # The reader checks the characters as it is made: it raises too.
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _count(node, where)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def _count(root: Any, where: str) -> None:
    """Walk the node graph as the values would expand, stopping past MAX_NODES."""
    import yaml

    seen = 0
    stack = [root]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise SweepFileError(
                f"{where}: more than {MAX_NODES:,} values once YAML aliases are expanded: "
                "list fewer values, without repeating anchors"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
