#!/usr/bin/env python3
"""
make_traffic.py: cuts the default request traffic (traffic/default.jsonl, traffic/sample.jsonl) out of
real text that a Debian system ships, in four clearly different domains. The repository ships the
generated files; nobody needs to run this to use Aurora-in-C. To regenerate (Debian 12 "bookworm"):

    python3 tools/make_traffic.py            # writes traffic/default.jsonl and traffic/sample.jsonl

Sources (only files installed by Debian packages, i.e. listed in /var/lib/dpkg/info/*.list, so that
pip/pyenv/npm trees and hand-installed software never leak in):
  c       C headers (*.h under /usr/include) of the packages libc6-dev and linux-libc-dev (what
          build-essential installs on every Debian)
  python  the Python 3.11 standard library as Debian ships it: /usr/lib/python3.11/**/*.py of
          libpython3.11-minimal and libpython3.11-stdlib (test suites excluded)
  prose   licence texts in /usr/share/common-licenses (package base-files, on every Debian) and plain-text
          documentation under /usr/share/doc (README*, NEWS, TODO, *.txt, *.md, copyright), licence
          paragraphs included; chunks must read as running text (mostly letters, long lines)
  shell   POSIX sh / bash scripts (first line #!/bin/sh, #!/bin/bash, #!/usr/bin/env bash, ...)
          installed by Debian packages (/usr/bin, /usr/sbin, /etc/init.d, /usr/lib, /usr/share, ...)
          and the packages' maintainer scripts in /var/lib/dpkg/info (*.postinst, *.prerm, ...)

Method, deterministic (sorted file lists, string-seeded generators, no timestamps): every file that is
valid UTF-8 without NUL bytes is cut into non-overlapping excerpts of 300-1200 characters that start and
end at line boundaries (each excerpt aims at a length drawn uniformly from 400-1100). Files are visited
in a seeded order, one excerpt per file per round, so each domain spreads over many files. An excerpt is
dropped as a near-duplicate when more than a quarter of its significant lines (>= 20 characters once
whitespace is collapsed) already appeared in an accepted excerpt of its domain (licence boilerplate,
debhelper snippets). Output: {"domain": ..., "prompt": ...} per line, ordered by domain
(c, python, prose, shell); 1000 prompts per domain in default.jsonl and the first 10 of each in
sample.jsonl. What the prompts say depends on the package versions installed; the shipped files were
cut on Debian 12.11.
"""
import glob
import gzip
import json
import os
import random
import re
import sys

SEED = 20240601
PER_DOMAIN = 1000
SAMPLE_PER_DOMAIN = 10
MIN_CHARS, MAX_CHARS = 300, 1200
TARGET_MIN, TARGET_MAX = 400, 1100
DOMAINS = ["c", "python", "prose", "shell"]
DPKG_INFO = "/var/lib/dpkg/info"
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "traffic")

SHEBANG = re.compile(rb"^#! ?(/usr)?/bin/(sh|bash|dash)\b|^#! ?/usr/bin/env (sh|bash)\b")
MAINTAINER_SCRIPT = re.compile(r"\.(preinst|postinst|prerm|postrm|config)$")
PROSE_NAME = re.compile(r"^(README.*|NEWS|TODO|copyright|.*\.txt|.*\.md)(\.gz)?$")


def package_files(package_glob):
    """Files listed by the installed packages whose .list matches package_glob (sorted)."""
    files = set()
    for listing in sorted(glob.glob(os.path.join(DPKG_INFO, package_glob + ".list"))):
        with open(listing, encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n")
                if path and os.path.isfile(path) and not os.path.islink(path):
                    files.add(path)
    return sorted(files)


def read_text(path):
    """The file as text, or None if it is binary, not UTF-8, or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        if b"\x00" in data:
            return None
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None
    return text.replace("\r\n", "\n")


def sources(domain):
    every = package_files("*")
    if domain == "c":
        files = package_files("libc6-dev*") + package_files("linux-libc-dev*")
        return sorted(p for p in set(files) if p.startswith("/usr/include/") and p.endswith(".h"))
    if domain == "python":
        files = package_files("libpython3.11-minimal*") + package_files("libpython3.11-stdlib*")
        return sorted(p for p in set(files) if p.startswith("/usr/lib/python3.11/") and p.endswith(".py")
                      and "/test/" not in p and "/tests/" not in p and "/idle_test/" not in p)
    if domain == "prose":
        licences = sorted(glob.glob("/usr/share/common-licenses/*"))
        docs = [p for p in every if p.startswith("/usr/share/doc/") and PROSE_NAME.match(os.path.basename(p))]
        return sorted(set(p for p in licences + docs if os.path.isfile(p) and not os.path.islink(p)))
    if domain == "shell":
        candidates = [p for p in every if not p.startswith("/usr/include/") and "/python3" not in p]
        candidates += sorted(p for p in glob.glob(os.path.join(DPKG_INFO, "*")) if MAINTAINER_SCRIPT.search(p))
        scripts = []
        for p in sorted(set(candidates)):
            try:
                with open(p, "rb") as f:
                    head = f.read(64)
            except OSError:
                continue
            if SHEBANG.match(head):
                scripts.append(p)
        return scripts
    raise ValueError(domain)


def looks_like_prose(chunk):
    lines = [l for l in chunk.split("\n") if l.strip()]
    visible = [c for c in chunk if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if not lines or not visible:
        return False
    mean_line = sum(len(l.strip()) for l in lines) / len(lines)
    field_lines = sum(bool(re.match(r"^[A-Za-z-]+:", l)) for l in lines)   # DEP-5 "Files:" / "License:" headers
    return letters / len(visible) >= 0.8 and mean_line >= 45 and field_lines <= 1


def excerpts(path, text, domain):
    """Non-overlapping line-aligned excerpts of MIN_CHARS..MAX_CHARS characters, in file order."""
    rng = random.Random(f"{SEED}:cut:{domain}:{path}")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    out, i = [], 0
    while i < len(lines):
        while i < len(lines) and not lines[i].strip():   # never start on a blank line
            i += 1
        target = rng.randint(TARGET_MIN, TARGET_MAX)
        start, length = i, 0
        while i < len(lines) and length < target and length + len(lines[i]) <= MAX_CHARS:
            length += len(lines[i])
            i += 1
        if i == start:   # a single line longer than MAX_CHARS: step over it
            i += 1
            continue
        chunk = "".join(lines[start:i])
        if not (MIN_CHARS <= len(chunk) <= MAX_CHARS):
            continue
        if any(ord(c) < 32 and c not in "\t\n" for c in chunk):
            continue
        if sum(1 for l in chunk.split("\n") if l.strip()) < 4:
            continue
        if domain == "prose" and not looks_like_prose(chunk):
            continue
        out.append(chunk)
    return out


def significant_lines(chunk):
    lines = (" ".join(l.split()).lower() for l in chunk.split("\n"))
    return [l for l in lines if len(l) >= 20]


def build_domain(domain):
    files = sources(domain)
    per_file = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        chunks = excerpts(path, text, domain)
        if chunks:
            random.Random(f"{SEED}:order:{domain}:{path}").shuffle(chunks)
            per_file.append((path, chunks))
    random.Random(f"{SEED}:files:{domain}").shuffle(per_file)
    seen, picked, used = set(), [], set()
    round_index = 0
    while len(picked) < PER_DOMAIN and any(round_index < len(c) for _, c in per_file):
        for path, chunks in per_file:
            if round_index >= len(chunks) or len(picked) >= PER_DOMAIN:
                continue
            chunk = chunks[round_index]
            significant = significant_lines(chunk)
            if len(significant) < 3:
                continue
            repeated = sum(l in seen for l in significant)
            if repeated * 4 > len(significant):
                continue
            seen.update(significant)
            picked.append(chunk)
            used.add(path)
        round_index += 1
    return files, used, picked


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    everything = {}
    for domain in DOMAINS:
        files, used, picked = build_domain(domain)
        if len(picked) < PER_DOMAIN:
            sys.exit(f"error: domain {domain}: only {len(picked)} distinct excerpts from {len(files)} files "
                     f"(need {PER_DOMAIN}); is this a Debian system with the packages listed at the top?")
        everything[domain] = picked
        lengths = [len(p) for p in picked]
        print(f"{domain:7s} {len(picked):5d} prompts from {len(used):4d} of {len(files):4d} files, "
              f"{min(lengths)}-{max(lengths)} chars (mean {sum(lengths) / len(lengths):.0f})")
    for name, count in (("default.jsonl", PER_DOMAIN), ("sample.jsonl", SAMPLE_PER_DOMAIN)):
        path = os.path.join(OUT_DIR, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for domain in DOMAINS:
                for prompt in everything[domain][:count]:
                    f.write(json.dumps({"domain": domain, "prompt": prompt}, ensure_ascii=False) + "\n")
        print(f"wrote {os.path.normpath(path)}: {count * len(DOMAINS)} lines, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
