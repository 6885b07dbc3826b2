#!/bin/sh
# Prints the CMake flags that build llama.cpp for this CPU: GGML_NATIVE=OFF (native builds crash in the AMX
# Q4_1 kernels on some of these machines) plus every x86 extension /proc/cpuinfo reports among AVX2, FMA,
# F16C, AVX-512, AVX-512 VNNI and AVX-VNNI (whole words of the flags line; AMX left out). Used by
# make oracle-deps (the Python binding) and tools/build_llama_tools.sh (the command-line tools), so both
# run on any x86 machine (a forced AVX-512 build dies of SIGILL on an AVX2-only EPYC) and both measure
# what llama.cpp does on this CPU.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2> /dev/null || true)
isa="-DGGML_NATIVE=OFF"
for pair in avx2:AVX2 fma:FMA f16c:F16C avx512f:AVX512 avx512_vnni:AVX512_VNNI avx_vnni:AVX_VNNI; do
    # (OFF as well as ON: a CMake cache kept from a build on another CPU must not keep an extension this one lacks)
    case " ${flags#*:} " in *" ${pair%%:*} "*) isa="$isa -DGGML_${pair#*:}=ON" ;; *) isa="$isa -DGGML_${pair#*:}=OFF" ;; esac
done
echo "$isa"
