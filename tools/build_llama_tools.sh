#!/bin/sh
# Builds llama.cpp's command-line tools from the llama.cpp tree inside the PyPI source package
# llama-cpp-python==0.3.36 (vendor/llama.cpp), for the oracle and side-by-side checks (make test-interop,
# make bench-spec). Output: build/llama.cpp/bin/{llama-speculative-simple,llama-simple,llama-completion,
# llama-bench}. Network: PyPI only (skipped when build/llama-cpp-python/ already holds the archive).
# Flags: tools/llama_isa.sh (this CPU's x86 extensions short of AMX), so llama-bench's figures are what
# llama.cpp does on this CPU (make bench compares with them).
# No curl/OpenSSL, no web UI, no tests.
# Usage: tools/build_llama_tools.sh [JOBS]   (JOBS defaults to 2; the build runs under nice -n 10)
set -eu
VERSION=0.3.36
ARCHIVE_DIR=build/llama-cpp-python
ARCHIVE=$ARCHIVE_DIR/llama_cpp_python-$VERSION.tar.gz
# the archive every session since the first built its oracle from (pip's download from PyPI): a different one
# is refused before it is unpacked or built
ARCHIVE_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SOURCE=$ARCHIVE_DIR/llama_cpp_python-$VERSION/vendor/llama.cpp
DEST=build/llama.cpp
JOBS=${1:-2}
PYTHON=${PYTHON:-python3}
TARGETS="llama-speculative-simple llama-simple llama-completion llama-bench"

mkdir -p "$ARCHIVE_DIR"
if [ ! -f "$ARCHIVE" ]; then
    echo "fetching the llama-cpp-python==$VERSION source package from PyPI (about 77 MB)"
    if ! "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$ARCHIVE_DIR"; then
        echo "error: could not download llama-cpp-python==$VERSION (offline?). Copy its sdist" >&2
        echo "llama_cpp_python-$VERSION.tar.gz into $ARCHIVE_DIR/ and run again." >&2
        exit 1
    fi
fi
actual_sha=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
if [ "$actual_sha" != "$ARCHIVE_SHA256" ]; then
    echo "error: $ARCHIVE has sha256 $actual_sha, expected $ARCHIVE_SHA256 (remove it to fetch it again)" >&2
    exit 1
fi
if [ ! -f "$SOURCE/CMakeLists.txt" ]; then
    # unpacked beside and renamed whole: an interrupted unpack leaves no tree that looks complete
    echo "unpacking $ARCHIVE"
    unpack=$ARCHIVE_DIR/unpack.$$
    rm -rf "$unpack" "$ARCHIVE_DIR/llama_cpp_python-$VERSION"
    mkdir "$unpack"
    tar -xzf "$ARCHIVE" -C "$unpack"
    mv "$unpack/llama_cpp_python-$VERSION" "$ARCHIVE_DIR/"
    rmdir "$unpack"
fi

ISA=$(sh tools/llama_isa.sh)
echo "llama.cpp: $ISA"

start=$(date +%s)
# shellcheck disable=SC2086
nice -n 10 cmake -S "$SOURCE" -B "$DEST" -DCMAKE_BUILD_TYPE=Release $ISA \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_BACKEND_DL=OFF
# shellcheck disable=SC2086
nice -n 10 cmake --build "$DEST" --config Release -j "$JOBS" --target $TARGETS
end=$(date +%s)
for tool in $TARGETS; do test -x "$DEST/bin/$tool" || { echo "error: $DEST/bin/$tool was not built" >&2; exit 1; }; done
echo "llama.cpp tools built in $DEST/bin ($((end - start)) s wall, $JOBS jobs)"
