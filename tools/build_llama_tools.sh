#!/bin/sh
# Builds llama.cpp's command-line tools from the llama.cpp tree inside the PyPI source package
# llama-cpp-python==0.3.36 (vendor/llama.cpp), for the oracle and side-by-side checks (make test-interop,
# make bench-spec). Output: build/llama.cpp/bin/{llama-speculative-simple,llama-simple,llama-completion,
# llama-bench}. Network: PyPI only (skipped when build/llama-cpp-python/ already holds the archive).
# Flags: GGML_NATIVE=OFF (native builds crash in the AMX Q4_1 kernels on some of these machines) plus every
# x86 extension this CPU reports in /proc/cpuinfo among AVX2, FMA, F16C, AVX-512, AVX-512 VNNI and AVX-VNNI,
# so llama-bench's figures are what llama.cpp does on this CPU short of AMX (make bench compares with them).
# No curl/OpenSSL, no web UI, no tests.
# Usage: tools/build_llama_tools.sh [JOBS]   (JOBS defaults to 2; the build runs under nice -n 10)
set -eu
VERSION=0.3.36
ARCHIVE_DIR=build/llama-cpp-python
ARCHIVE=$ARCHIVE_DIR/llama_cpp_python-$VERSION.tar.gz
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
if [ ! -f "$SOURCE/CMakeLists.txt" ]; then
    echo "unpacking $ARCHIVE"
    tar -xzf "$ARCHIVE" -C "$ARCHIVE_DIR"
fi

# the CPU's extensions (whole words of the flags line), AMX left out
ISA=""
flags=$(grep -m1 '^flags' /proc/cpuinfo 2> /dev/null || true)
for pair in avx2:AVX2 fma:FMA f16c:F16C avx512f:AVX512 avx512_vnni:AVX512_VNNI avx_vnni:AVX_VNNI; do
    case " ${flags#*:} " in *" ${pair%%:*} "*) ISA="$ISA -DGGML_${pair#*:}=ON" ;; esac
done
echo "llama.cpp: GGML_NATIVE=OFF,$ISA"

start=$(date +%s)
# shellcheck disable=SC2086
nice -n 10 cmake -S "$SOURCE" -B "$DEST" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF $ISA \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_BACKEND_DL=OFF
# shellcheck disable=SC2086
nice -n 10 cmake --build "$DEST" --config Release -j "$JOBS" --target $TARGETS
end=$(date +%s)
for tool in $TARGETS; do test -x "$DEST/bin/$tool" || { echo "error: $DEST/bin/$tool was not built" >&2; exit 1; }; done
echo "llama.cpp tools built in $DEST/bin ($((end - start)) s wall, $JOBS jobs)"
