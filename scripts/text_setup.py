#!/usr/bin/env python3
"""Text data for `oar train ernie-…`: the Python 3.11 documentation sources from Debian's
`python3.11-doc` package (scripts/setup.sh installs it; ~500 reStructuredText documents,
about 12 MB) as a plain-text corpus split by document into training and validation.

    python3 scripts/text_setup.py [OUT_DIR] [SOURCES]
        (defaults: target/data/pydoc, /usr/share/doc/python3.11/html/_sources)

OUT_DIR/train/NAME.txt       one document per file (NAME: its path with '/' as '__')
OUT_DIR/validation/NAME.txt  every 20th document by a hash of its path (about 5%)
OUT_DIR/meta.json            {"kind": "text", "documents": …, "source": …}

The split is a function of each document's path alone (sha1), so it is the same on every
machine and does not move when documents are added. Light clean-up keeps the prose and the
code examples but drops reST markup that is not language: directive lines (`.. x::`), their
`:option:` lines, role prefixes (:func:`len` -> len), section-underline rows and link
targets. Skipped when OUT_DIR/meta.json exists; without the package it prints how to get it
and leaves the corpus missing (the text tests then skip with a message).
"""
import hashlib
import json
import os
import re
import sys

ROLE = re.compile(r":[a-zA-Z0-9_:+-]+:`([^`]*)`")
TARGET_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`_{1,2}")
LITERAL = re.compile(r"``([^`]*)``")
UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{3,}\s*$")
DIRECTIVE = re.compile(r"^\s*\.\. ")
FIELD = re.compile(r"^\s+:[a-zA-Z-]+:( .*)?$")


def clean(text):
    """reST source -> prose and code, one paragraph per blank-line-separated block."""
    out = []
    for line in text.splitlines():
        if UNDERLINE.match(line) or DIRECTIVE.match(line) or FIELD.match(line):
            continue
        line = ROLE.sub(lambda m: m.group(1).split("<")[0].strip().lstrip("~!"), line)
        line = TARGET_LINK.sub(lambda m: m.group(1), line)
        line = LITERAL.sub(lambda m: m.group(1), line)
        line = line.replace("**", "").replace("::", ":")
        out.append(line.rstrip())
    body = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"


def is_validation(rel):
    return int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 20 == 0


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "data", "pydoc")
    src = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/doc/python3.11/html/_sources"
    if os.path.isfile(os.path.join(out, "meta.json")):
        print(f"text_setup: {out} is ready")
        return 0
    if not os.path.isdir(src):
        print(f"text_setup: {src} is missing (apt-get install python3.11-doc, or run "
              "scripts/setup.sh); no text corpus", file=sys.stderr)
        return 0
    docs = []
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".txt"):
                path = os.path.join(root, f)
                docs.append(os.path.relpath(path, src))
    docs.sort()
    counts = {"train": 0, "validation": 0}
    chars = {"train": 0, "validation": 0}
    for rel in docs:
        with open(os.path.join(src, rel), encoding="utf-8", errors="replace") as f:
            body = clean(f.read())
        if len(body.split()) < 20:
            continue  # index stubs and include fragments carry no prose
        split = "validation" if is_validation(rel) else "train"
        name = rel.replace(os.sep, "__").removesuffix(".rst.txt").removesuffix(".txt") + ".txt"
        os.makedirs(os.path.join(out, split), exist_ok=True)
        with open(os.path.join(out, split, name), "w", encoding="utf-8") as f:
            f.write(body)
        counts[split] += 1
        chars[split] += len(body)
    meta = {
        "kind": "text",
        "documents": counts,
        "characters": chars,
        "source": f"Debian python3.11-doc: {src}",
        "split": "sha1(relative path) % 20 == 0 -> validation",
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"text_setup: wrote {counts['train']} training and {counts['validation']} "
          f"validation documents to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
