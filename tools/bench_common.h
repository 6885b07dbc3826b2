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

#endif // BENCH_COMMON_H
