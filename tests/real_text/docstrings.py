"""Writes real English text for cfmem's real-text test: the docstrings of the Python standard
library that Debian's python3 package installs (nothing is downloaded).

    python3 docstrings.py OUT_DIR

OUT_DIR/corpus.jsonl holds the docstrings of the packages in CORPUS_PACKAGES (source = the
package), OUT_DIR/background.jsonl those of every other module: the same language and
register, no document in both. Docstrings shorter than MIN_BYTES or longer than MAX_BYTES
are skipped, and a text seen before is kept once, so the files hold no exact duplicates.
The output depends only on the installed standard library.
"""

import ast
import json
import pathlib
import sys
import sysconfig

CORPUS_PACKAGES = ("email", "json", "http", "unittest", "logging", "concurrent")
MIN_BYTES = 200
MAX_BYTES = 1200
CORPUS_DOCUMENTS = 160
BACKGROUND_BYTES = 400_000


def docstrings(path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text and MIN_BYTES <= len(text.encode()) <= MAX_BYTES:
                name = getattr(node, "name", "<module>")
                yield f"{getattr(node, 'lineno', 0)}:{name}", text


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    seen = set()
    corpus, background = [], []
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if any(part in ("test", "tests", "idlelib", "site-packages", "dist-packages") for part in relative.parts):
            continue
        package = relative.parts[0].removesuffix(".py")
        for place, text in docstrings(path):
            if text in seen:
                continue
            seen.add(text)
            doc = {"id": f"{relative}:{place}", "text": text, "source": package}
            (corpus if package in CORPUS_PACKAGES else background).append(doc)
    # An even spread over the packages, in file order.
    corpus = [corpus[i * len(corpus) // CORPUS_DOCUMENTS] for i in range(min(CORPUS_DOCUMENTS, len(corpus)))]
    kept, size = [], 0
    for doc in background[:: 2]:
        if size >= BACKGROUND_BYTES:
            break
        kept.append(doc)
        size += len(doc["text"].encode())
    for name, docs in (("corpus.jsonl", corpus), ("background.jsonl", kept)):
        with open(out / name, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc) + "\n")
        print(f"{name}: {len(docs)} documents, {sum(len(d['text'].encode()) for d in docs)} bytes", file=sys.stderr)


main()
