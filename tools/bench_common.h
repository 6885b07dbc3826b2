/*
bench_common.h: what the benchmarks share (tools/bench_speed.c, tools/bench_ops.c): the machine's name,
its threads and load, and its measured read bandwidth. A benchmark #defines TESTING, #includes
"../aurora.c", then this file.
*/
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

// The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere).
static void cpu_model_name(char* name, size_t size) {
    snprintf(name, size, "unknown CPU");
    FILE* f = fopen("/proc/cpuinfo", "r");
    if (!f) { return; }
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char* colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t') { colon++; }
                snprintf(name, size, "%s", colon);
                name[strcspn(name, "\n")] = 0;
            }
            break;
        }
    }
    fclose(f);
}

static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// The 1-minute load average (-1 where unknown): timings of n threads are unreliable while it exceeds the
// core count (another process holds a core, and every parallel region waits for the thread it displaced).
static double load_average(void) {
    double load = -1;
    FILE* f = fopen("/proc/loadavg", "r");
    if (f) { if (fscanf(f, "%lf", &load) != 1) { load = -1; } fclose(f); }
    return load;
}

// Sum of n floats with 8 independent accumulators (so the adds keep up with memory), widest vectors the
// CPU has; the result is only kept to keep the reads alive.
#if FAST_X86
static FAST_AVX512_TARGET float bench_sum_avx512(const float* x, size_t n) {
    __m512 acc[8];
    for (int k = 0; k < 8; k++) { acc[k] = _mm512_setzero_ps(); }
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        for (int k = 0; k < 8; k++) { acc[k] = _mm512_add_ps(acc[k], _mm512_loadu_ps(x + i + 16 * k)); }
    }
    for (int k = 1; k < 8; k++) { acc[0] = _mm512_add_ps(acc[0], acc[k]); }
    float sum = _mm512_reduce_add_ps(acc[0]);
    for (; i < n; i++) { sum += x[i]; }
    return sum;
}
#endif
static float bench_sum(const float* x, size_t n) {
#if FAST_X86
    if (fast_isa_current() >= FAST_ISA_AVX512) { return bench_sum_avx512(x, n); }
#endif
    float acc[32] = {0};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        #pragma omp simd
        for (int k = 0; k < 32; k++) { acc[k] += x[i + k]; }
    }
    float sum = 0.0f;
    for (int k = 0; k < 32; k++) { sum += acc[k]; }
    for (; i < n; i++) { sum += x[i]; }
    return sum;
}

// Read bandwidth in GB/s: every thread sums its share of a buffer of `bytes`, best of `repeats`.
static double read_bandwidth(size_t bytes, int repeats) {
    size_t n = bytes / sizeof(float);
    float* buffer = mallocCheck(n * sizeof(float));
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { buffer[i] = (float)(i & 7); }   // touch every page, on its thread
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r < repeats; r++) {
        double start = now_seconds();
        float total = 0.0f;
        #pragma omp parallel reduction(+:total)
        {
            int parts = 1, part = 0;
#ifdef _OPENMP
            parts = omp_get_num_threads();
            part = omp_get_thread_num();
#endif
            size_t first = n * part / parts, last = n * (part + 1) / parts;
            total += bench_sum(buffer + first, last - first);
        }
        double seconds = now_seconds() - start;
        sink += total;
        if (seconds < best) { best = seconds; }
    }
    (void)sink;
    free(buffer);
    return (double)bytes / best / 1e9;
}

// The int8 multiply-add peak of the instructions the int8 matmul is built on, in multiply-adds per second,
// every thread at once: the compute limit of a batch's matmuls, as weight bytes / bandwidth is the memory
// limit of a decode step. AVX-512 VNNI: vpdpbusd alone (64 multiply-adds of unsigned by signed bytes into 16
// int32 lanes), 16 independent accumulators per thread (enough chains to cover its latency). AVX2: the int8
// kernel's integer steps alone for 256 products (a block of 32 weights by 8 rows, one input row: 8
// vpmaddubsw, 7 vpaddw summing them, a vpmaddwd to int32 and a vpaddd into an accumulator), two such blocks
// at once; the kernel also unpacks the nibbles, broadcasts the input and scales in fp32, so this is a bound
// it cannot reach. 0 on other CPUs.
#if FAST_X86
// (asm on 16 named accumulators: written as a loop over an array of vectors, GCC 12 moved the accumulators
// between registers and the stack around the instructions)
static FAST_VNNI_TARGET __attribute__((noinline)) int vnni_chains(long iterations) {
    __m512i a0 = _mm512_set1_epi32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m512i a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    __m512i w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(5);
    for (long i = 0; i < iterations; i++) {
        // (two statements of 8: an asm statement takes at most 30 operands, and "+v" counts twice)
        __asm__ volatile(
            "vpdpbusd %9, %8, %0\n\tvpdpbusd %9, %8, %1\n\tvpdpbusd %9, %8, %2\n\tvpdpbusd %9, %8, %3\n\t"
            "vpdpbusd %9, %8, %4\n\tvpdpbusd %9, %8, %5\n\tvpdpbusd %9, %8, %6\n\tvpdpbusd %9, %8, %7"
            : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7) : "v"(w), "v"(x));
        __asm__ volatile(
            "vpdpbusd %9, %8, %0\n\tvpdpbusd %9, %8, %1\n\tvpdpbusd %9, %8, %2\n\tvpdpbusd %9, %8, %3\n\t"
            "vpdpbusd %9, %8, %4\n\tvpdpbusd %9, %8, %5\n\tvpdpbusd %9, %8, %6\n\tvpdpbusd %9, %8, %7"
            : "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11), "+v"(a12), "+v"(a13), "+v"(a14), "+v"(a15) : "v"(w), "v"(x));
    }
    __m512i sum = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                   _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)),
                                                 _mm512_add_epi32(_mm512_add_epi32(a12, a13), _mm512_add_epi32(a14, a15))));
    return _mm512_reduce_add_epi32(sum);
}

// one block of 256 products: 8 products into ymm0-7, summed to one, widened and added into acc (written
// out in asm as vnni_chains is); two blocks a step, into two accumulators
#define AVX2_INT8_BLOCK                                                                                      \
    "vpmaddubsw %[x], %[w], %%ymm0\n\tvpmaddubsw %[x], %[w], %%ymm1\n\tvpmaddubsw %[x], %[w], %%ymm2\n\t"     \
    "vpmaddubsw %[x], %[w], %%ymm3\n\tvpmaddubsw %[x], %[w], %%ymm4\n\tvpmaddubsw %[x], %[w], %%ymm5\n\t"     \
    "vpmaddubsw %[x], %[w], %%ymm6\n\tvpmaddubsw %[x], %[w], %%ymm7\n\t"                                     \
    "vpaddw %%ymm1, %%ymm0, %%ymm0\n\tvpaddw %%ymm3, %%ymm2, %%ymm2\n\tvpaddw %%ymm5, %%ymm4, %%ymm4\n\t"     \
    "vpaddw %%ymm7, %%ymm6, %%ymm6\n\tvpaddw %%ymm2, %%ymm0, %%ymm0\n\tvpaddw %%ymm6, %%ymm4, %%ymm4\n\t"     \
    "vpaddw %%ymm4, %%ymm0, %%ymm0\n\tvpmaddwd %[ones], %%ymm0, %%ymm0\n\tvpaddd %%ymm0, %[acc], %[acc]"
static FAST_AVX2_TARGET __attribute__((noinline)) int avx2_int8_blocks(long iterations) {
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
    __m256i w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
    for (long i = 0; i < iterations; i++) {
        __asm__ volatile(AVX2_INT8_BLOCK : [acc] "+x"(acc0) : [w] "x"(w), [x] "x"(x), [ones] "x"(ones)
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
        __asm__ volatile(AVX2_INT8_BLOCK : [acc] "+x"(acc1) : [w] "x"(w), [x] "x"(x), [ones] "x"(ones)
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
    }
    __m256i sum = _mm256_add_epi32(acc0, acc1);
    return _mm256_extract_epi32(sum, 0);
}
#endif

static double int8_peak_macs(int repeats) {
#if FAST_X86
    int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    if (!vnni && !__builtin_cpu_supports("avx2")) { return 0; }
    const long iterations = 2000000;   // 32 million instructions a thread: about 10 ms
    double best = 1e30;
    volatile int sink = 0;
    for (int r = 0; r < repeats; r++) {
        double start = now_seconds();
        int total = 0;
        #pragma omp parallel reduction(+:total)
        { total += vnni ? vnni_chains(iterations) : avx2_int8_blocks(iterations); }
        double seconds = now_seconds() - start;
        sink += total;
        if (seconds < best) { best = seconds; }
    }
    (void)sink;
    return (double)iterations * (vnni ? 16 * 64 : 2 * 256) * n_threads() / best;
#else
    (void)repeats;
    return 0;
#endif
}

#endif // BENCH_COMMON_H
