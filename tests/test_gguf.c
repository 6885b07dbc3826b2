/*
test_gguf.c: tests for gguf.c: fp16/bf16 conversion, quantisation, the GGUF writer and reader, and
the reader's handling of malformed files (every one must be a clean error, never a crash).

Build and run (must pass with no sanitizer report and no warning):
  gcc -g -fsanitize=address,undefined -fno-sanitize-recover=all -std=c11 -Wall -Wextra -D_GNU_SOURCE \
      -Itests -I. tests/test_gguf.c -lm -o /tmp/test_gguf && /tmp/test_gguf
  /tmp/test_gguf SEED_DIR   additionally writes fuzzing seed files into SEED_DIR
Prints one line per group of checks and ends with "N passed, M failed"; exits nonzero on failure.
*/
#define TESTING
#include "../aurora.c"
#include <sys/resource.h>
#include <sys/wait.h>

// ----------------------------------------------------------------------------
// check bookkeeping

static int checks_passed = 0, checks_failed = 0;
static int group_failed = 0;

#define CHECK(condition, ...) do { \
    if (condition) { checks_passed++; } \
    else { checks_failed++; group_failed++; printf("  FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } \
} while (0)

static void group_end(const char* name) {
    printf("%-58s %s\n", name, group_failed ? "FAILED" : "ok");
    group_failed = 0;
}

// Deterministic random numbers, so failures reproduce.
static uint64_t random_state = 0x9e3779b97f4a7c15ULL;
static uint32_t test_random_u32(void) { return random_u32(&random_state); } // the project's generator
static float random_uniform(void) { return (float)test_random_u32() / 4294967296.0f; }   // [0, 1)
static float random_normal(void) {
    float u = random_uniform() + 1e-7f, v = random_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

// ----------------------------------------------------------------------------
// fp16 / bf16

// Independent fp16 decode: the textbook formula with ldexp.
static double reference_fp16(uint16_t h) {
    int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    double magnitude = exponent == 0 ? ldexp(mantissa, -24)
                     : exponent == 31 ? (mantissa ? NAN : INFINITY)
                     : ldexp(1024 + mantissa, exponent - 25);
    return sign ? -magnitude : magnitude;
}

static double reference_bf16(uint16_t h) {
    int sign = h >> 15, exponent = (h >> 7) & 0xff, mantissa = h & 0x7f;
    double magnitude = exponent == 0 ? ldexp(mantissa, -133)
                     : exponent == 255 ? (mantissa ? NAN : INFINITY)
                     : ldexp(128 + mantissa, exponent - 134);
    return sign ? -magnitude : magnitude;
}

// Checks that encoding f gave the nearest representable value, ties to even, using neighbours
// decoded by the independent formula. Works for any finite f within range.
static int is_nearest_even(float f, uint16_t h, double (*decode)(uint16_t)) {
    double x = f, got = decode(h);
    if (isinf(got)) { return 1; }  // overflow is checked separately
    uint16_t up = (uint16_t)(h + 1), down = (uint16_t)(h - 1);
    if ((h & 0x7fff) == 0) { down = (uint16_t)((h ^ 0x8000) + 1); }   // the neighbour of zero across the sign
    double candidates[2] = { decode(up), decode(down) };
    for (int i = 0; i < 2; i++) {
        if (isnan(candidates[i])) { continue; }
        double d_got = fabs(x - got), d_other = fabs(x - candidates[i]);
        if (d_other < d_got) { return 0; }
        if (d_other == d_got && (h & 1)) { return 0; }   // a tie must pick the even encoding
    }
    return 1;
}

static void test_fp16(void) {
    int decode_mismatches = 0, roundtrip_mismatches = 0;
    for (uint32_t bits = 0; bits < 65536; bits++) {
        float got = fp16_to_fp32((uint16_t)bits);
        double want = reference_fp16((uint16_t)bits);
        if (isnan(want) ? !isnan(got) : (double)got != want || !signbit(got) != !signbit(want)) { decode_mismatches++; }
        if (!isnan(want) && fp32_to_fp16(got) != bits) { roundtrip_mismatches++; }
    }
    CHECK(decode_mismatches == 0, "fp16 decode mismatches: %d", decode_mismatches);
    CHECK(roundtrip_mismatches == 0, "fp16 roundtrip mismatches: %d", roundtrip_mismatches);
    // random floats over the whole fp16 range, including subnormals
    int not_nearest = 0;
    for (int i = 0; i < 200000; i++) {
        float f = ldexpf(random_uniform() * 2.0f - 1.0f, (int)(test_random_u32() % 42) - 26);
        if (!is_nearest_even(f, fp32_to_fp16(f), reference_fp16)) { not_nearest++; }
    }
    CHECK(not_nearest == 0, "fp16 encode not nearest-even: %d", not_nearest);
    // exact midpoints between neighbours must round to the even one
    int tie_errors = 0;
    for (uint32_t bits = 0; bits < 0x7bff; bits++) {
        float mid = (float)((reference_fp16((uint16_t)bits) + reference_fp16((uint16_t)(bits + 1))) / 2);
        uint16_t want = (bits & 1) ? (uint16_t)(bits + 1) : (uint16_t)bits;
        if (fp32_to_fp16(mid) != want) { tie_errors++; }
    }
    CHECK(tie_errors == 0, "fp16 tie errors: %d", tie_errors);
    CHECK(fp32_to_fp16(65504.0f) == 0x7bff, "max half");
    CHECK(fp32_to_fp16(65519.99f) == 0x7bff, "just below the overflow threshold");
    CHECK(fp32_to_fp16(65520.0f) == 0x7c00, "65520 ties to inf");
    CHECK(fp32_to_fp16(-1e30f) == 0xfc00, "-inf on overflow");
    CHECK(fp32_to_fp16(INFINITY) == 0x7c00 && fp32_to_fp16(-INFINITY) == 0xfc00, "inf");
    uint16_t nan_half = fp32_to_fp16(NAN);
    CHECK((nan_half & 0x7c00) == 0x7c00 && (nan_half & 0x3ff) != 0, "nan stays nan: %04x", nan_half);
    CHECK(fp32_to_fp16(ldexpf(1, -25)) == 0x0000, "2^-25 ties to 0");
    CHECK(fp32_to_fp16(ldexpf(1.0001f, -25)) == 0x0001, "just above 2^-25 rounds to the smallest subnormal");
    CHECK(fp32_to_fp16(ldexpf(3, -25)) == 0x0002, "1.5 subnormal units ties to 2");
    CHECK(fp32_to_fp16(-0.0f) == 0x8000, "-0");
    CHECK(fp32_to_fp16(ldexpf(1, -140)) == 0x0000, "float subnormal -> 0");
    group_end("fp16: decode all 65536, encode nearest-even, specials");
}

static void test_bf16(void) {
    int decode_mismatches = 0, roundtrip_mismatches = 0;
    for (uint32_t bits = 0; bits < 65536; bits++) {
        float got = bf16_to_fp32((uint16_t)bits);
        double want = reference_bf16((uint16_t)bits);
        if (isnan(want) ? !isnan(got) : (double)got != want || !signbit(got) != !signbit(want)) { decode_mismatches++; }
        if (!isnan(want) && fp32_to_bf16(got) != bits) { roundtrip_mismatches++; }
    }
    CHECK(decode_mismatches == 0, "bf16 decode mismatches: %d", decode_mismatches);
    CHECK(roundtrip_mismatches == 0, "bf16 roundtrip mismatches: %d", roundtrip_mismatches);
    int not_nearest = 0;
    for (int i = 0; i < 200000; i++) {
        float f = ldexpf(random_uniform() * 2.0f - 1.0f, (int)(test_random_u32() % 200) - 100);
        if (!is_nearest_even(f, fp32_to_bf16(f), reference_bf16)) { not_nearest++; }
    }
    CHECK(not_nearest == 0, "bf16 encode not nearest-even: %d", not_nearest);
    CHECK(fp32_to_bf16(1.00390625f) == 0x3f80, "1 + 2^-8 ties down to even 1.0");
    CHECK(fp32_to_bf16(1.01171875f) == 0x3f82, "1 + 3*2^-8 ties up to even");
    CHECK(fp32_to_bf16(3.4e38f) == 0x7f80, "rounds to inf above the largest bf16");
    uint16_t nan_bf = fp32_to_bf16(NAN);
    CHECK((nan_bf & 0x7f80) == 0x7f80 && (nan_bf & 0x7f) != 0, "nan stays nan: %04x", nan_bf);
    group_end("bf16: decode all 65536, encode nearest-even, specials");
}

// ----------------------------------------------------------------------------
// quantisation

static void test_type_table(void) {
    int types[] = { TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1 };
    const char* names[] = { "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1" };
    int64_t blocks[] = { 1, 1, 1, 32, 32, 32 };
    size_t bytes[] = { 4, 2, 2, 34, 18, 20 };
    for (int i = 0; i < 6; i++) {
        CHECK(tensor_type_supported(types[i]), "%s supported", names[i]);
        CHECK(strcmp(tensor_type_name(types[i]), names[i]) == 0, "name of %d", types[i]);
        CHECK(tensor_type_block_size(types[i]) == blocks[i], "block size of %s", names[i]);
        CHECK(tensor_type_block_bytes(types[i]) == bytes[i], "block bytes of %s", names[i]);
        CHECK(tensor_bytes(types[i], 96) == (size_t)(96 / blocks[i]) * bytes[i], "bytes of 96 %s", names[i]);
    }
    CHECK(!tensor_type_supported(6) && !tensor_type_supported(12) && !tensor_type_supported(-1), "unsupported types");
    CHECK(strcmp(tensor_type_name(14), "unknown") == 0, "unknown name");
    CHECK(tensor_bytes(TYPE_Q4_0, 33) == 0 && tensor_bytes(TYPE_F32, -1) == 0 && tensor_bytes(7, 32) == 0, "invalid sizes give 0");
    CHECK(tensor_bytes(TYPE_F32, INT64_MAX) == 0, "overflowing size gives 0");
    group_end("tensor types: names, block sizes, byte counts");
}

// Random data at several scales; each type's error must stay within its bound (per element).
static void test_quantize_error_bounds(void) {
    enum { N = 32 * 64 };
    float* x = mallocCheck(N * sizeof(float));
    float* y = mallocCheck(N * sizeof(float));
    uint8_t* packed = mallocCheck(N * 4);
    int types[] = { TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1 };
    float scales[] = { 1e-3f, 1.0f, 37.0f };
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < N; i++) { x[i] = scales[s] * random_normal() + (i % 64 < 32 ? 0.0f : 0.5f * scales[s]); }
        for (int i = 0; i < 32; i++) { x[i] = 0.0f; }              // an all-zero block
        for (int i = 32; i < 64; i++) { x[i] = -2.5f * scales[s]; } // a constant block
        for (int t = 0; t < 6; t++) {
            int type = types[t];
            quantize_row(type, x, packed, N);
            dequantize_row(type, packed, y, N);
            int violations = 0;
            for (int b = 0; b < N / 32; b++) {
                const float* xb = x + b * 32;
                float amax = 0, min = xb[0], max = xb[0];
                for (int j = 0; j < 32; j++) { amax = fmaxf(amax, fabsf(xb[j])); min = fminf(min, xb[j]); max = fmaxf(max, xb[j]); }
                for (int j = 0; j < 32; j++) {
                    float e = fabsf(xb[j] - y[b * 32 + j]), bound;
                    switch (type) {
                        case TYPE_F32: bound = 0; break;
                        case TYPE_F16: bound = fabsf(xb[j]) * 0x1p-11f + 0x1p-25f; break;   // half an ulp (or subnormal step)
                        case TYPE_BF16: bound = fabsf(xb[j]) * 0x1p-8f; break;
                        // half a step, plus the scale's own fp16 rounding (relative 2^-11, or absolute
                        // 2^-25 when the scale is an fp16 subnormal) times the largest q
                        case TYPE_Q8_0: bound = amax / 127 * (0.5f + 127 * 0x1p-11f) + 127 * 0x1p-25f + 1e-6f * amax; break;
                        // a full step: the value of largest magnitude fixes q = 0, so the opposite end clamps
                        case TYPE_Q4_0: bound = amax / 8 * (1.0f + 8 * 0x1p-11f) + 8 * 0x1p-25f + 1e-6f * amax; break;
                        default: bound = (max - min) / 15 * (0.5f + 15 * 0x1p-11f) + fabsf(min) * 0x1p-11f + 16 * 0x1p-25f +
                                         1e-6f * (fabsf(min) + fabsf(max)); break;
                    }
                    if (!(e <= bound)) { violations++; }
                }
            }
            CHECK(violations == 0, "%s scale %g: %d elements beyond the error bound", tensor_type_name(type), scales[s], violations);
            // the zero block must come back as exact zeros (a constant block only within the bound above: its
            // scale is rounded to fp16)
            int zeros_exact = 1;
            for (int j = 0; j < 32; j++) { zeros_exact &= y[j] == 0.0f; }
            CHECK(zeros_exact, "%s: an all-zero block stays zero", tensor_type_name(type));
        }
    }
    free(x); free(y); free(packed);
    group_end("quantize -> dequantize error bounds (random data, 6 types)");
}

static void check_block(int type, const float* x, const uint8_t* want_bytes, const float* want_values, const char* what) {
    uint8_t packed[40] = {0};
    float y[32];
    size_t n = tensor_type_block_bytes(type);
    quantize_row(type, x, packed, 32);
    CHECK(memcmp(packed, want_bytes, n) == 0, "%s: bytes differ", what);
    dequantize_row(type, want_bytes, y, 32);
    int value_errors = 0;
    for (int j = 0; j < 32; j++) { value_errors += y[j] != want_values[j]; }
    CHECK(value_errors == 0, "%s: %d dequantised values differ", what, value_errors);
}

// Blocks worked out by hand from the formats' definitions.
static void test_known_blocks(void) {
    float x[32], want[32];
    uint8_t bytes[40];
    // Q8_0: the largest magnitude is 127, so d = 1 (fp16 0x3c00) and q = round(x), halves away from 0
    for (int j = 0; j < 32; j++) { x[j] = (float)(j * 7 - 100); }
    x[0] = -127.0f; x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.49f;
    bytes[0] = 0x00; bytes[1] = 0x3c;
    for (int j = 0; j < 32; j++) { bytes[2 + j] = (uint8_t)(int8_t)(j * 7 - 100); }
    bytes[2] = (uint8_t)(int8_t)-127; bytes[3] = 3; bytes[4] = (uint8_t)(int8_t)-3; bytes[5] = 0;
    for (int j = 0; j < 32; j++) { want[j] = (float)(int8_t)bytes[2 + j]; }
    check_block(TYPE_Q8_0, x, bytes, want, "Q8_0 d=1");

    // Q4_0: the largest magnitude is -8, so d = -8 / -8 = 1 and q = min(15, trunc(x + 8.5))
    for (int j = 0; j < 32; j++) { x[j] = (float)(j % 16) - 7.0f; }   // -7..8, q = 1..15 (8 clamps to 15... +8.5 = 16.5)
    x[0] = -8.0f; x[5] = 0.5f; x[6] = -0.5f; x[7] = 0.4f;
    int q[32];
    for (int j = 0; j < 32; j++) { int v = (int)(x[j] + 8.5f); q[j] = v > 15 ? 15 : v; }
    CHECK(q[0] == 0 && q[5] == 9 && q[6] == 8 && q[7] == 8 && q[15] == 15, "Q4_0 hand values");
    bytes[0] = 0x00; bytes[1] = 0x3c;
    for (int j = 0; j < 16; j++) { bytes[2 + j] = (uint8_t)(q[j] | (q[j + 16] << 4)); }
    for (int j = 0; j < 32; j++) { want[j] = (float)(q[j] - 8); }
    check_block(TYPE_Q4_0, x, bytes, want, "Q4_0 d=1");

    // Q4_0 with a positive extreme: max = 16 gives d = -2 (fp16 0xc000): 16 -> q 0, -14 -> q 15, 0 -> q 8
    for (int j = 0; j < 32; j++) { x[j] = 0.0f; }
    x[0] = 16.0f; x[17] = -14.0f; x[3] = 2.0f;   // 2 / -2 + 8.5 = 7.5 -> 7
    bytes[0] = 0x00; bytes[1] = 0xc0;
    for (int j = 0; j < 16; j++) { bytes[2 + j] = 0x88; }
    bytes[2 + 0] = 0x80; bytes[2 + 1] = 0xf8; bytes[2 + 3] = 0x87;
    for (int j = 0; j < 32; j++) { want[j] = 0.0f; }
    want[0] = 16.0f; want[17] = -14.0f; want[3] = 2.0f;
    check_block(TYPE_Q4_0, x, bytes, want, "Q4_0 d=-2");

    // Q4_1: min -1 and max 14 give d = 1 (0x3c00), m = -1 (0xbc00), q = trunc(x + 1 + 0.5)
    for (int j = 0; j < 32; j++) { x[j] = (float)((j * 5) % 16) - 1.0f; }
    x[4] = 3.5f;   // 4.5 + 0.5 -> q 5: halves round up
    x[9] = 3.4f;   // q 4
    bytes[0] = 0x00; bytes[1] = 0x3c; bytes[2] = 0x00; bytes[3] = 0xbc;
    for (int j = 0; j < 32; j++) { q[j] = (int)(x[j] + 1.0f + 0.5f); }
    CHECK(q[4] == 5 && q[9] == 4, "Q4_1 hand values");
    for (int j = 0; j < 16; j++) { bytes[4 + j] = (uint8_t)(q[j] | (q[j + 16] << 4)); }
    for (int j = 0; j < 32; j++) { want[j] = (float)q[j] - 1.0f; }
    check_block(TYPE_Q4_1, x, bytes, want, "Q4_1 d=1 m=-1");

    // nan and inf inputs must not be undefined behaviour (UBSan watches the float -> int conversions)
    for (int j = 0; j < 32; j++) { x[j] = j % 3 == 0 ? NAN : (j % 3 == 1 ? INFINITY : 1.0f); }
    uint8_t scratch[40];
    quantize_row(TYPE_Q8_0, x, scratch, 32);
    quantize_row(TYPE_Q4_0, x, scratch, 32);
    quantize_row(TYPE_Q4_1, x, scratch, 32);
    CHECK(1, "nan/inf quantised without undefined behaviour");
    group_end("quantize: hand-computed blocks for Q8_0, Q4_0, Q4_1");
}

// ----------------------------------------------------------------------------
// hand-built GGUF bytes (for values the writer cannot make and for malformed files)

static void put_u32(GGUFBuffer* b, uint32_t v) { gguf_buffer_u32(b, v); }
static void put_u64(GGUFBuffer* b, uint64_t v) { gguf_buffer_u64(b, v); }
static void put_string(GGUFBuffer* b, const char* s) { gguf_buffer_string(b, s); }
static void put_header(GGUFBuffer* b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gguf_buffer_append(b, "GGUF", 4); put_u32(b, version); put_u64(b, n_tensors); put_u64(b, n_kv);
}
static void put_kv_u32(GGUFBuffer* b, const char* key, uint32_t v) { put_string(b, key); put_u32(b, GGUF_TYPE_UINT32); put_u32(b, v); }
static void put_tensor_info(GGUFBuffer* b, const char* name, uint32_t n_dims, const uint64_t* dims, uint32_t type, uint64_t offset) {
    put_string(b, name); put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) { put_u64(b, dims[d]); }
    put_u32(b, type); put_u64(b, offset);
}
static void put_zeros(GGUFBuffer* b, size_t n) { for (size_t i = 0; i < n; i++) { uint8_t z = 0; gguf_buffer_append(b, &z, 1); } }

// Opens bytes from an exactly-sized heap copy, so AddressSanitizer catches any read past the end.
static int open_exact(GGUFFile* gguf, const uint8_t* bytes, size_t size, Error* err, uint8_t** copy) {
    *copy = mallocCheck(size);
    if (size) { memcpy(*copy, bytes, size); }
    return gguf_open_memory(gguf, *copy, size, "test.gguf", err);
}

// The file must fail to open with a message containing every given fragment.
static void expect_error(GGUFBuffer* b, const char* case_name, const char* fragment1, const char* fragment2) {
    GGUFFile gguf;
    Error err = {{0}};
    uint8_t* copy;
    int status = open_exact(&gguf, b->data, b->size, &err, &copy);
    CHECK(status == -1, "%s: should fail to open", case_name);
    if (status == 0) { gguf_close(&gguf); }
    else {
        int ok = strstr(err.message, "test.gguf") != NULL && strstr(err.message, fragment1) != NULL &&
                 (fragment2 == NULL || strstr(err.message, fragment2) != NULL);
        CHECK(ok, "%s: message \"%s\" lacks \"%s\" / \"%s\"", case_name, err.message, fragment1, fragment2 ? fragment2 : "");
    }
    free(copy);
    free(b->data);
    memset(b, 0, sizeof(*b));
}

// A small hand-built file with nested arrays and a scalar of every type; tensors optional.
static void build_nested_file(GGUFBuffer* b, int depth) {
    put_header(b, 3, 1, 4);
    put_kv_u32(b, "general.alignment", 16);
    // an array of 2 arrays of 3 int16 each, and an array of arrays of strings
    put_string(b, "test.matrix"); put_u32(b, GGUF_TYPE_ARRAY); put_u32(b, GGUF_TYPE_ARRAY); put_u64(b, 2);
    for (int row = 0; row < 2; row++) {
        put_u32(b, GGUF_TYPE_INT16); put_u64(b, 3);
        for (int k = 0; k < 3; k++) { uint16_t v = (uint16_t)(int16_t)(row * 10 - k); gguf_buffer_append(b, &v, 2); }
    }
    put_string(b, "test.words"); put_u32(b, GGUF_TYPE_ARRAY); put_u32(b, GGUF_TYPE_ARRAY); put_u64(b, 1);
    put_u32(b, GGUF_TYPE_STRING); put_u64(b, 2); put_string(b, "alpha"); put_string(b, "");
    // `depth` levels of arrays, the innermost holding one uint8
    put_string(b, "test.deep"); put_u32(b, GGUF_TYPE_ARRAY);
    for (int level = 1; level < depth; level++) { put_u32(b, GGUF_TYPE_ARRAY); put_u64(b, 1); }
    put_u32(b, GGUF_TYPE_UINT8); put_u64(b, 1); put_zeros(b, 1);
    uint64_t dims[2] = { 4, 2 };
    put_tensor_info(b, "weights", 2, dims, TYPE_F32, 0);
    while (b->size % 16) { put_zeros(b, 1); }
    for (int i = 0; i < 8; i++) { float f = (float)i; gguf_buffer_append(b, &f, 4); }
}

// ----------------------------------------------------------------------------
// writer -> reader round trip

typedef struct { const char* name; int type; int n_dims; int64_t shape[4]; } TensorSpec;
static const TensorSpec round_trip_tensors[] = {
    { "t.f32", TYPE_F32, 2, {7, 3, 1, 1} },
    { "t.f16", TYPE_F16, 1, {5, 1, 1, 1} },
    { "t.bf16", TYPE_BF16, 4, {3, 1, 2, 7} },
    { "t.q8_0", TYPE_Q8_0, 2, {64, 3, 1, 1} },
    { "t.q4_0", TYPE_Q4_0, 3, {32, 1, 3, 1} },
    { "t.q4_1", TYPE_Q4_1, 4, {96, 2, 1, 1} },
    { "t.last", TYPE_F32, 1, {8, 1, 1, 1} },   // 32 bytes, so the file ends without padding
};
#define N_ROUND_TRIP_TENSORS (int)(sizeof(round_trip_tensors) / sizeof(round_trip_tensors[0]))

static int64_t spec_elements(const TensorSpec* spec) { return spec->shape[0] * spec->shape[1] * spec->shape[2] * spec->shape[3]; }
static float spec_value(int tensor, int64_t i) { return sinf((float)(i * 7 + tensor * 131)) * (float)(1 + tensor); }

static const char* const round_trip_words[] = { "hello", "", "w\xc3\xb6rld", "<|im_start|>", "a b c" };

// Everything the writer can store: every scalar type, arrays of every fixed type, strings,
// string arrays, an empty array, and the tensors above.
static GGUFWriter* build_round_trip_writer(uint32_t alignment) {
    GGUFWriter* writer = gguf_writer_new();
    if (alignment) { gguf_writer_set_alignment(writer, alignment); }
    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000; int64_t i64 = -5000000000LL; double f64 = -1.0 / 3.0;
    gguf_writer_add_scalar(writer, "s.uint8", GGUF_TYPE_UINT8, &u8);
    gguf_writer_add_scalar(writer, "s.int8", GGUF_TYPE_INT8, &i8);
    gguf_writer_add_scalar(writer, "s.uint16", GGUF_TYPE_UINT16, &u16);
    gguf_writer_add_scalar(writer, "s.int16", GGUF_TYPE_INT16, &i16);
    gguf_writer_add_uint32(writer, "s.uint32", 4000000000u);
    gguf_writer_add_int32(writer, "s.int32", -2000000000);
    gguf_writer_add_float32(writer, "s.float32", 0.15625f);
    gguf_writer_add_bool(writer, "s.bool", 1);
    gguf_writer_add_bool(writer, "s.false", 0);
    gguf_writer_add_string(writer, "s.string", "SmolLM2 \xe2\x9c\x93");
    gguf_writer_add_uint64(writer, "s.uint64", 18000000000000000000ULL);
    gguf_writer_add_scalar(writer, "s.int64", GGUF_TYPE_INT64, &i64);
    gguf_writer_add_scalar(writer, "s.float64", GGUF_TYPE_FLOAT64, &f64);
    int32_t ints[5] = { 1, -2, 3, 2147483647, -2147483647 - 1 };
    uint8_t bytes[3] = { 0, 255, 7 };
    int16_t shorts[2] = { -32768, 32767 };
    uint64_t bigs[2] = { 5, 1ULL << 40 };
    float floats[2] = { 1.5f, -0.0f };
    double doubles[1] = { 1e300 };
    uint8_t bools[2] = { 1, 0 };
    gguf_writer_add_array(writer, "a.int32", GGUF_TYPE_INT32, ints, 5);
    gguf_writer_add_array(writer, "a.uint8", GGUF_TYPE_UINT8, bytes, 3);
    gguf_writer_add_array(writer, "a.int16", GGUF_TYPE_INT16, shorts, 2);
    gguf_writer_add_array(writer, "a.uint64", GGUF_TYPE_UINT64, bigs, 2);
    gguf_writer_add_array(writer, "a.float32", GGUF_TYPE_FLOAT32, floats, 2);
    gguf_writer_add_array(writer, "a.float64", GGUF_TYPE_FLOAT64, doubles, 1);
    gguf_writer_add_array(writer, "a.bool", GGUF_TYPE_BOOL, bools, 2);
    gguf_writer_add_array(writer, "a.empty", GGUF_TYPE_UINT32, NULL, 0);
    gguf_writer_add_string_array(writer, "a.strings", round_trip_words, 5);
    for (int t = 0; t < N_ROUND_TRIP_TENSORS; t++) {
        const TensorSpec* spec = &round_trip_tensors[t];
        int64_t n = spec_elements(spec);
        float* data = mallocCheck((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) { data[i] = spec_value(t, i); }
        gguf_writer_add_tensor(writer, spec->name, spec->type, spec->n_dims, spec->shape, data);
        free(data);
    }
    return writer;
}

static void check_round_trip_file(const GGUFFile* gguf, uint32_t alignment) {
    Error err = {{0}};
    int64_t i = 0; double f = 0; int b = -1; char* s = NULL;
    CHECK(gguf->version == 3, "version %u", gguf->version);
    CHECK(gguf->alignment == (alignment ? alignment : 32), "alignment %llu", (unsigned long long)gguf->alignment);
    CHECK(gguf->data_offset % gguf->alignment == 0, "data offset aligned");
    CHECK(gguf_get_int(gguf, "s.uint8", &i, &err) == 0 && i == 200, "uint8");
    CHECK(gguf_get_int(gguf, "s.int8", &i, &err) == 0 && i == -100, "int8");
    CHECK(gguf_get_int(gguf, "s.uint16", &i, &err) == 0 && i == 60000, "uint16");
    CHECK(gguf_get_int(gguf, "s.int16", &i, &err) == 0 && i == -30000, "int16");
    CHECK(gguf_get_int(gguf, "s.uint32", &i, &err) == 0 && i == 4000000000LL, "uint32");
    CHECK(gguf_get_int(gguf, "s.int32", &i, &err) == 0 && i == -2000000000, "int32");
    CHECK(gguf_get_int(gguf, "s.int64", &i, &err) == 0 && i == -5000000000LL, "int64");
    CHECK(gguf_find(gguf, "s.uint64") && gguf_find(gguf, "s.uint64")->uinteger == 18000000000000000000ULL, "uint64 value");
    CHECK(gguf_get_float(gguf, "s.float32", &f, &err) == 0 && f == 0.15625, "float32");
    CHECK(gguf_get_float(gguf, "s.float64", &f, &err) == 0 && f == -1.0 / 3.0, "float64");
    CHECK(gguf_get_float(gguf, "s.int32", &f, &err) == 0 && f == -2000000000.0, "get_float of an integer");
    CHECK(gguf_get_bool(gguf, "s.bool", &b, &err) == 0 && b == 1, "bool true");
    CHECK(gguf_get_bool(gguf, "s.false", &b, &err) == 0 && b == 0, "bool false");
    CHECK(gguf_get_string(gguf, "s.string", &s, &err) == 0 && strcmp(s, "SmolLM2 \xe2\x9c\x93") == 0, "string");
    free(s);
    int32_t* ints = NULL; uint64_t count = 0;
    CHECK(gguf_get_int_array(gguf, "a.int32", &ints, &count, &err) == 0 && count == 5 && ints[0] == 1 && ints[1] == -2 &&
          ints[3] == 2147483647 && ints[4] == -2147483647 - 1, "int32 array");
    free(ints); ints = NULL;
    CHECK(gguf_get_int_array(gguf, "a.uint8", &ints, &count, &err) == 0 && count == 3 && ints[1] == 255 && ints[2] == 7, "uint8 array");
    free(ints); ints = NULL;
    CHECK(gguf_get_int_array(gguf, "a.int16", &ints, &count, &err) == 0 && count == 2 && ints[0] == -32768 && ints[1] == 32767, "int16 array");
    free(ints); ints = NULL;
    CHECK(gguf_get_int_array(gguf, "a.empty", &ints, &count, &err) == 0 && count == 0, "empty array");
    free(ints); ints = NULL;
    CHECK(gguf_get_int_array(gguf, "a.uint64", &ints, &count, &err) == -1 && strstr(err.message, "element 1 does not fit in int32"), "uint64 array overflow: %s", err.message);
    const GGUFValue* floats = gguf_find(gguf, "a.float32");
    CHECK(floats && floats->array_type == GGUF_TYPE_FLOAT32 && floats->array_count == 2, "float32 array header");
    if (floats) {
        GGUFValue element = {0};
        gguf_decode_scalar(GGUF_TYPE_FLOAT32, floats->array_raw + 4, &element);
        CHECK(element.real == 0.0 && signbit(element.real), "float32 array element -0");
    }
    const GGUFValue* doubles = gguf_find(gguf, "a.float64");
    CHECK(doubles && doubles->array_count == 1 && gguf_load_u64(doubles->array_raw) == 0x7e37e43c8800759cULL, "float64 array element 1e300");
    const GGUFValue* bools = gguf_find(gguf, "a.bool");
    CHECK(bools && bools->array_type == GGUF_TYPE_BOOL && bools->array_raw[0] == 1 && bools->array_raw[1] == 0, "bool array");
    char** words = NULL;
    CHECK(gguf_get_string_array(gguf, "a.strings", &words, &count, &err) == 0 && count == 5, "string array");
    for (uint64_t w = 0; words && w < 5; w++) { CHECK(strcmp(words[w], round_trip_words[w]) == 0, "word %llu", (unsigned long long)w); }
    free_string_array(words, count);
    // tensors: the reader must give back exactly what quantize -> dequantize gives
    CHECK(gguf->n_tensors == (uint64_t)N_ROUND_TRIP_TENSORS, "tensor count");
    for (int t = 0; t < N_ROUND_TRIP_TENSORS; t++) {
        const TensorSpec* spec = &round_trip_tensors[t];
        const GGUFTensor* tensor = gguf_find_tensor(gguf, spec->name);
        CHECK(tensor != NULL, "tensor %s present", spec->name);
        if (tensor == NULL) { continue; }
        int64_t n = spec_elements(spec);
        CHECK(tensor->type == spec->type && tensor->n_dims == spec->n_dims && tensor->n_elements == n &&
              memcmp(tensor->shape, spec->shape, sizeof(tensor->shape)) == 0, "tensor %s header", spec->name);
        CHECK(tensor->offset % gguf->alignment == 0, "tensor %s offset aligned", spec->name);
        float* source = mallocCheck((size_t)n * sizeof(float));
        float* want = mallocCheck((size_t)n * sizeof(float));
        float* got = mallocCheck((size_t)n * sizeof(float));
        uint8_t* packed = mallocCheck(tensor_bytes(spec->type, n));
        for (int64_t k = 0; k < n; k++) { source[k] = spec_value(t, k); }
        quantize_row(spec->type, source, packed, n);
        dequantize_row(spec->type, packed, want, n);
        gguf_tensor_to_f32(tensor, got);
        CHECK(memcmp(want, got, (size_t)n * sizeof(float)) == 0, "tensor %s data", spec->name);
        free(source); free(want); free(got); free(packed);
    }
    CHECK(gguf_find_tensor(gguf, "t.absent") == NULL && gguf_find(gguf, "absent") == NULL, "absent lookups give NULL");
}

static void test_round_trip(void) {
    uint32_t alignments[] = { 0, 1, 64 };   // 0: the default (no general.alignment key)
    for (int a = 0; a < 3; a++) {
        GGUFWriter* writer = build_round_trip_writer(alignments[a]);
        Error err = {{0}};
        char path[96];   // the process id: make test runs a test and its sanitized build side by side
        snprintf(path, sizeof(path), "/tmp/aurora_test_gguf_round_trip_%d.gguf", (int)getpid());
        CHECK(gguf_writer_save(writer, path, &err) == 0, "save: %s", err.message);
        gguf_writer_free(writer);
        GGUFFile gguf;
        int status = gguf_open(&gguf, path, &err);   // through mmap
        CHECK(status == 0, "open: %s", err.message);
        if (status == 0) { check_round_trip_file(&gguf, alignments[a]); gguf_close(&gguf); }
        remove(path);
    }
    // version 2 reads the same (the layout is identical)
    GGUFWriter* writer = build_round_trip_writer(0);
    GGUFBuffer b = {0};
    b.size = b.capacity = gguf_writer_to_memory(writer, &b.data);
    gguf_writer_free(writer);
    b.data[4] = 2;
    GGUFFile gguf;
    Error err = {{0}};
    uint8_t* copy;
    CHECK(open_exact(&gguf, b.data, b.size, &err, &copy) == 0 && gguf.version == 2, "version 2: %s", err.message);
    if (gguf.version == 2) { gguf_close(&gguf); }
    free(copy);
    // a big-endian file (its version's bytes swapped) is named as such, not as an unknown version
    b.data[4] = 0; b.data[7] = 3;
    CHECK(open_exact(&gguf, b.data, b.size, &err, &copy) != 0 && strstr(err.message, "big-endian"),
          "big-endian: %s", err.message);
    free(copy); free(b.data);
    group_end("writer -> reader round trip (all types, 3 alignments, v2, big-endian refused)");
}

// gguf_writer_add_tensor_from: a tensor of an open file converted while the new file is written, in chunks of
// whole rows (2^20 values: 5,000 rows of 256 make five chunks, the last one short), must give the bytes
// of converting the whole tensor at once.
static void test_conversion(void) {
    enum { COLS = 256, ROWS = 5000 };
    int64_t shape[2] = {COLS, ROWS}, vector_shape[1] = {96};
    float* values = mallocCheck((size_t)COLS * ROWS * sizeof(float));
    for (int64_t i = 0; i < (int64_t)COLS * ROWS; i++) { values[i] = random_normal(); }
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_tensor(writer, "matrix", TYPE_Q8_0, 2, shape, values);
    gguf_writer_add_tensor(writer, "vector", TYPE_F32, 1, vector_shape, values);
    uint8_t* bytes = NULL;
    size_t size = gguf_writer_to_memory(writer, &bytes);
    gguf_writer_free(writer);
    GGUFFile source;
    Error err = {{0}};
    CHECK(gguf_open_memory(&source, bytes, size, "source", &err) == 0, "open the source: %s", err.message);
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    for (int k = 0; k < 6; k++) {
        GGUFWriter* converted = gguf_writer_new();
        gguf_writer_add_tensor_from(converted, "matrix", types[k], gguf_find_tensor(&source, "matrix"));
        gguf_writer_add_tensor_from(converted, "vector", types[k] == TYPE_F32 ? TYPE_F16 : TYPE_F32, gguf_find_tensor(&source, "vector"));
        uint8_t* out = NULL;
        size_t out_size = gguf_writer_to_memory(converted, &out);
        gguf_writer_free(converted);
        GGUFFile result;
        int opened = gguf_open_memory(&result, out, out_size, "converted", &err) == 0;
        CHECK(opened, "open the conversion to %s: %s", tensor_type_name(types[k]), err.message);
        for (int t = 0; t < 2 && opened; t++) {
            const GGUFTensor* from = gguf_find_tensor(&source, t == 0 ? "matrix" : "vector");
            const GGUFTensor* got = gguf_find_tensor(&result, t == 0 ? "matrix" : "vector");
            int type = t == 0 ? types[k] : types[k] == TYPE_F32 ? TYPE_F16 : TYPE_F32;
            float* whole = mallocCheck((size_t)from->n_elements * sizeof(float));
            uint8_t* want = mallocCheck(tensor_bytes(type, from->n_elements));
            gguf_tensor_to_f32(from, whole);
            quantize_row(type, whole, want, from->n_elements);
            CHECK(got && got->type == type && got->n_elements == from->n_elements && got->n_bytes == tensor_bytes(type, from->n_elements) &&
                  memcmp(got->data, want, got->n_bytes) == 0, "%s converted to %s: not the bytes of the whole tensor converted at once",
                  from->name, tensor_type_name(type));
            free(whole);
            free(want);
        }
        if (opened) { gguf_close(&result); }
        free(out);
    }
    gguf_close(&source);
    free(bytes);
    free(values);
    group_end("conversion from an open file, in chunks of rows (6 types)");
}

static void test_nested_arrays(void) {
    GGUFBuffer b = {0};
    build_nested_file(&b, 3);
    GGUFFile gguf;
    Error err = {{0}};
    uint8_t* copy;
    int status = open_exact(&gguf, b.data, b.size, &err, &copy);
    CHECK(status == 0, "nested file opens: %s", err.message);
    if (status == 0) {
        const GGUFValue* matrix = gguf_find(&gguf, "test.matrix");
        CHECK(matrix && matrix->array_type == GGUF_TYPE_ARRAY && matrix->array_count == 2, "array of arrays header");
        // second row starts after the first: 4 (type) + 8 (count) + 3 * 2 bytes
        if (matrix) {
            const uint8_t* row1 = matrix->array_raw + 4 + 8 + 6;
            GGUFValue element = {0};
            gguf_decode_scalar(GGUF_TYPE_INT16, row1 + 12 + 2 * 2, &element);
            CHECK(gguf_load_u32(row1) == GGUF_TYPE_INT16 && gguf_load_u64(row1 + 4) == 3 && element.integer == 8, "array of arrays element [1][2] = 8");
        }
        const GGUFValue* words = gguf_find(&gguf, "test.words");
        CHECK(words && words->array_type == GGUF_TYPE_ARRAY && words->array_count == 1, "array of arrays of strings");
        CHECK(gguf.alignment == 16 && gguf_find_tensor(&gguf, "weights") != NULL, "alignment 16 and tensor");
        float weights[8];
        gguf_tensor_to_f32(gguf_find_tensor(&gguf, "weights"), weights);
        CHECK(weights[7] == 7.0f, "tensor data after nested arrays");
        int64_t i;
        CHECK(gguf_get_int(&gguf, "test.matrix", &i, &err) == -1 && strstr(err.message, "has type array of array, expected an integer"), "%s", err.message);
        gguf_close(&gguf);
    }
    free(copy); free(b.data);
    memset(&b, 0, sizeof(b));
    build_nested_file(&b, GGUF_MAX_ARRAY_DEPTH);
    status = open_exact(&gguf, b.data, b.size, &err, &copy);
    CHECK(status == 0, "depth %d opens: %s", GGUF_MAX_ARRAY_DEPTH, err.message);
    if (status == 0) { gguf_close(&gguf); }
    free(copy); free(b.data);
    memset(&b, 0, sizeof(b));
    build_nested_file(&b, GGUF_MAX_ARRAY_DEPTH + 1);
    expect_error(&b, "nested too deep", "nested more than 8 deep", "test.deep");
    group_end("nested arrays (arrays of arrays, of strings; depth limit)");
}

// ----------------------------------------------------------------------------
// getters: wrong kinds and missing keys

static void test_getter_errors(void) {
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_string(writer, "llama.block_count", "thirty");
    gguf_writer_add_uint32(writer, "n", 3);
    gguf_writer_add_float32(writer, "x", 1.0f);
    gguf_writer_add_uint64(writer, "big", 1ULL << 63);
    gguf_writer_add_string(writer, "nul", "a");
    gguf_writer_add_string_array(writer, "words", (const char* const[]){ "a" }, 1);
    GGUFBuffer b = {0};
    b.size = b.capacity = gguf_writer_to_memory(writer, &b.data);
    gguf_writer_free(writer);
    // make the one-byte value of "nul" a NUL byte: it follows the key (8 + 3 bytes), type (4) and length (8)
    uint8_t* nul_key = memmem(b.data, b.size, "\x03\0\0\0\0\0\0\0nul", 11);
    if (nul_key) { nul_key[11 + 4 + 8] = 0; }
    GGUFFile gguf;
    Error err = {{0}};
    uint8_t* copy;
    int status = open_exact(&gguf, b.data, b.size, &err, &copy);
    CHECK(status == 0, "open: %s", err.message);
    if (status == 0) {
        int64_t i; double f; int flag; char* s = NULL; char** strings = NULL; int32_t* ints = NULL; uint64_t count;
        CHECK(gguf_get_int(&gguf, "llama.block_count", &i, &err) == -1 &&
              strcmp(err.message, "test.gguf: key 'llama.block_count' has type string, expected an integer") == 0, "%s", err.message);
        CHECK(gguf_get_int(&gguf, "llama.embedding_length", &i, &err) == -1 &&
              strcmp(err.message, "test.gguf: required key 'llama.embedding_length' is missing") == 0, "%s", err.message);
        CHECK(gguf_get_string(&gguf, "n", &s, &err) == -1 && strstr(err.message, "key 'n' has type uint32, expected string"), "%s", err.message);
        CHECK(gguf_get_bool(&gguf, "x", &flag, &err) == -1 && strstr(err.message, "key 'x' has type float32, expected bool"), "%s", err.message);
        CHECK(gguf_get_float(&gguf, "words", &f, &err) == -1 && strstr(err.message, "key 'words' has type array of string, expected a number"), "%s", err.message);
        CHECK(gguf_get_int(&gguf, "x", &i, &err) == -1 && strstr(err.message, "has type float32, expected an integer"), "%s", err.message);
        CHECK(gguf_get_int(&gguf, "big", &i, &err) == -1 && strstr(err.message, "too large for int64"), "%s", err.message);
        CHECK(gguf_get_string_array(&gguf, "n", &strings, &count, &err) == -1 && strstr(err.message, "expected array of string"), "%s", err.message);
        CHECK(gguf_get_int_array(&gguf, "words", &ints, &count, &err) == -1 &&
              strstr(err.message, "has type array of string, expected array of integers"), "%s", err.message);
        CHECK(gguf_get_string(&gguf, "nul", &s, &err) == -1 && strstr(err.message, "NUL byte"), "%s", err.message);
        CHECK(gguf_get_float(&gguf, "missing", &f, &err) == -1 && strstr(err.message, "required key 'missing' is missing"), "%s", err.message);
        gguf_close(&gguf);
    }
    free(copy); free(b.data);
    // the writer refuses misuse at save time
    writer = gguf_writer_new();
    gguf_writer_add_uint32(writer, "k", 1);
    gguf_writer_add_uint32(writer, "k", 2);
    CHECK(gguf_writer_save(writer, "/tmp/aurora_never_written.gguf", &err) == -1 && strstr(err.message, "duplicate key 'k'"), "%s", err.message);
    gguf_writer_free(writer);
    writer = gguf_writer_new();
    float row[33] = {0};
    gguf_writer_add_tensor(writer, "w", TYPE_Q8_0, 1, (const int64_t[]){ 33 }, row);
    CHECK(gguf_writer_save(writer, "/tmp/aurora_never_written.gguf", &err) == -1 && strstr(err.message, "block size for tensor 'w'"), "%s", err.message);
    gguf_writer_free(writer);
    // a shape whose element count overflows (2^32 x 2^32) is refused before anything is allocated for it
    writer = gguf_writer_new();
    gguf_writer_add_tensor(writer, "w", TYPE_F32, 2, (const int64_t[]){ INT64_C(1) << 32, INT64_C(1) << 32 }, row);
    CHECK(gguf_writer_save(writer, "/tmp/aurora_never_written.gguf", &err) == -1 && strstr(err.message, "too many elements for tensor 'w'"), "%s", err.message);
    gguf_writer_free(writer);
    CHECK(gguf_open(&gguf, "/tmp/aurora_does_not_exist.gguf", &err) == -1 && strstr(err.message, "cannot open"), "%s", err.message);
    group_end("getters: wrong kind, missing key; writer misuse; missing file");
}

// ----------------------------------------------------------------------------
// malformed files

// A corrupt key count within the bounds (GGUF_MAX_KEYS, and the bytes left: 48 MiB of file) whose second key
// is malformed: the reader allocates as it reads, so it reports the bad key instead of asking for 80 bytes a
// claimed key up front (before the count's cap, 310 MB for the 3.9 million keys 48 MiB could claim). Run in
// a child whose address space is capped 160 MB above what it uses (not under the sanitizers, whose shadow
// memory the cap would count).
static void test_claimed_count_memory(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    printf("claimed key count: skipped under a sanitizer\n");
#else
    enum { FILE_BYTES = 48 << 20 };
    GGUFBuffer b = {0};
    put_header(&b, 3, 0, GGUF_MAX_KEYS);
    put_kv_u32(&b, "general.first", 1);
    put_u64(&b, 1); gguf_buffer_append(&b, "k", 1); put_u32(&b, 99);   // key #1: an invalid value type
    size_t used = b.size;
    uint8_t* bytes = callocCheck(FILE_BYTES, 1);
    memcpy(bytes, b.data, used);
    free(b.data);
    pid_t child = fork();
    if (child == 0) {
        long pages = 0;
        FILE* statm = fopen("/proc/self/statm", "r");
        if (statm == NULL || fscanf(statm, "%ld", &pages) != 1) { _exit(4); }
        fclose(statm);
        struct rlimit cap = {(rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (160u << 20), RLIM_INFINITY};
        cap.rlim_max = cap.rlim_cur;
        if (setrlimit(RLIMIT_AS, &cap) != 0) { _exit(4); }
        GGUFFile gguf;
        Error err = {{0}};
        if (gguf_open_memory(&gguf, bytes, FILE_BYTES, "test.gguf", &err) == 0) { _exit(3); }
        _exit(strstr(err.message, "key 'k'") != NULL && strstr(err.message, "99") != NULL ? 0 : 2);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a corrupt key count of %d within the bound: the reader "
          "should report key #1's bad type within 160 MB of address space (child exit %d: 1 out of memory, 2 another "
          "message, 3 opened, 4 setup)", GGUF_MAX_KEYS, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    free(bytes);
#endif
}

static void test_malformed(void) {
    GGUFBuffer b = {0};
    uint64_t dims1[1] = { 32 };
    // header
    gguf_buffer_append(&b, "GGUX", 4); put_u32(&b, 3); put_u64(&b, 0); put_u64(&b, 0);
    expect_error(&b, "bad magic", "not a GGUF file", "expected \"GGUF\"");
    put_header(&b, 1, 0, 0);
    expect_error(&b, "version 1", "unsupported GGUF version 1 (expected 2 or 3)", NULL);
    put_header(&b, 4, 0, 0);
    expect_error(&b, "version 4", "unsupported GGUF version 4 (expected 2 or 3)", NULL);
    gguf_buffer_append(&b, "GG", 2);
    expect_error(&b, "two bytes", "truncated header at byte 0 while reading the magic", NULL);
    put_header(&b, 3, 1ULL << 60, 0);
    expect_error(&b, "absurd tensor count", "claims 1152921504606846976 tensors", NULL);
    put_header(&b, 3, 0, UINT64_MAX);
    expect_error(&b, "absurd key count", "claims 18446744073709551615 key/value pairs", NULL);
    // past the caps, though the bytes left could hold them (the writer's checks of a copy would grow quadratically)
    put_header(&b, 3, 0, GGUF_MAX_KEYS + 1); put_zeros(&b, 13 * (GGUF_MAX_KEYS + 1));
    expect_error(&b, "key count past the cap", "claims 65537 key/value pairs; expected at most 65536", NULL);
    put_header(&b, 3, GGUF_MAX_TENSORS + 1, 0); put_zeros(&b, 32 * (GGUF_MAX_TENSORS + 1));
    expect_error(&b, "tensor count past the cap", "claims 65537 tensors; expected at most 65536", NULL);
    // keys and values
    put_header(&b, 3, 0, 1); put_u64(&b, 1ULL << 62); put_zeros(&b, 20);
    expect_error(&b, "huge key length", "the name of key #0", "more than the 20 bytes left");
    put_header(&b, 3, 0, 1); put_string(&b, "general.name"); put_u32(&b, GGUF_TYPE_STRING); put_u64(&b, 1ULL << 40); gguf_buffer_append(&b, "abc", 3);
    expect_error(&b, "huge string value", "the string value of key 'general.name'", "more than the 3 bytes left");
    put_header(&b, 3, 0, 1); put_string(&b, "k"); put_u32(&b, 13); put_u32(&b, 0);
    expect_error(&b, "invalid value type", "the value type of key 'k' is 13, not a valid GGUF value type", NULL);
    put_header(&b, 3, 0, 1); put_string(&b, "k"); put_u32(&b, GGUF_TYPE_ARRAY); put_u32(&b, 0xffffffffu); put_u64(&b, 0);
    expect_error(&b, "invalid array element type", "array element type of key 'k' is 4294967295", NULL);
    put_header(&b, 3, 0, 1); put_string(&b, "k"); put_u32(&b, GGUF_TYPE_ARRAY); put_u32(&b, GGUF_TYPE_UINT32); put_u64(&b, 1ULL << 61); put_zeros(&b, 16);
    expect_error(&b, "absurd array count", "array of uint32 in key 'k' claims 2305843009213693952 elements", "hold at most 4");
    put_header(&b, 3, 0, 1); put_string(&b, "k"); put_u32(&b, GGUF_TYPE_ARRAY); put_u32(&b, GGUF_TYPE_STRING); put_u64(&b, 2); put_string(&b, "x"); put_u64(&b, 99);
    expect_error(&b, "array string too long", "an array string of key 'k'", "length 99");
    put_header(&b, 3, 0, 1); put_string(&b, "flag"); put_u32(&b, GGUF_TYPE_BOOL); put_zeros(&b, 0); { uint8_t two = 2; gguf_buffer_append(&b, &two, 1); }
    expect_error(&b, "bool 2", "key 'flag' is a bool with value 2", NULL);
    put_header(&b, 3, 0, 1); put_string(&b, "flags"); put_u32(&b, GGUF_TYPE_ARRAY); put_u32(&b, GGUF_TYPE_BOOL); put_u64(&b, 3);
    { uint8_t values[3] = {1, 0, 2}; gguf_buffer_append(&b, values, 3); }
    expect_error(&b, "bool 2 in an array", "array of bool in key 'flags' holds 2 at element 2", NULL);
    put_header(&b, 3, 0, 1); put_u64(&b, 3); gguf_buffer_append(&b, "a\0b", 3); put_u32(&b, GGUF_TYPE_UINT8); put_zeros(&b, 1);
    expect_error(&b, "NUL in key", "the name of key #0 contains a NUL byte", NULL);
    put_header(&b, 3, 0, 2); put_kv_u32(&b, "dup", 1); put_kv_u32(&b, "dup", 2);
    expect_error(&b, "duplicate key", "duplicate key 'dup'", NULL);
    // alignment
    put_header(&b, 3, 0, 1); put_kv_u32(&b, "general.alignment", 0);
    expect_error(&b, "alignment 0", "'general.alignment' is 0, expected a nonzero power of two", NULL);
    put_header(&b, 3, 0, 1); put_kv_u32(&b, "general.alignment", 48);
    expect_error(&b, "alignment 48", "'general.alignment' is 48, expected a nonzero power of two", NULL);
    put_header(&b, 3, 0, 1); put_string(&b, "general.alignment"); put_u32(&b, GGUF_TYPE_UINT64); put_u64(&b, 32);
    expect_error(&b, "alignment uint64", "'general.alignment' has type uint64, expected uint32", NULL);
    // tensors
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, dims1, 6, 0); put_zeros(&b, 64);
    expect_error(&b, "unknown tensor type 6", "tensor 'w' has unknown tensor type 6", "supported: F32=0, F16=1, Q4_0=2, Q4_1=3, Q8_0=8, I32=26, I64=27, BF16=30");
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, dims1, 12, 0); put_zeros(&b, 64);
    expect_error(&b, "unknown tensor type 12 (Q4_K)", "unknown tensor type 12", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 0, dims1, TYPE_F32, 0); put_zeros(&b, 64);
    expect_error(&b, "zero dims", "tensor 'w' has 0 dimensions (expected 1 to 4)", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 5, (const uint64_t[]){1, 1, 1, 1, 1}, TYPE_F32, 0); put_zeros(&b, 64);
    expect_error(&b, "five dims", "tensor 'w' has 5 dimensions", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 2, (const uint64_t[]){4, 0}, TYPE_F32, 0); put_zeros(&b, 64);
    expect_error(&b, "zero-size dimension", "tensor 'w' has dimension 1 of size 0", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 3, (const uint64_t[]){4, 1ULL << 32, 1ULL << 32}, TYPE_F32, 0); put_zeros(&b, 64);
    expect_error(&b, "element count overflow", "tensor 'w' has dimension 2 of size 4294967296", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 2, (const uint64_t[]){1ULL << 31, 1ULL << 31}, TYPE_F32, 0); put_zeros(&b, 64);
    expect_error(&b, "bytes overflow", "tensor 'w' has 4611686018427387904 elements, too many to address", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 2, (const uint64_t[]){1ULL << 30, 1ULL << 31}, TYPE_F32, 0); put_zeros(&b, 64);
    expect_error(&b, "huge tensor", "tensor 'w'", "lies past the end of the file");
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, (const uint64_t[]){33}, TYPE_Q8_0, 0); put_zeros(&b, 128);
    expect_error(&b, "row not a multiple of the block", "tensor 'w' has rows of 33 elements, not a multiple of the Q8_0 block size 32", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 4); while (b.size % 32) { put_zeros(&b, 1); } put_zeros(&b, 256);
    expect_error(&b, "misaligned offset", "tensor 'w' has data offset 4, not a multiple of the alignment 32", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 0); while (b.size % 32) { put_zeros(&b, 1); } put_zeros(&b, 127);
    expect_error(&b, "tensor past end by one byte", "tensor 'w' (F32, 128 bytes at data offset 0) lies past the end of the file", "holds 127 bytes");
    // two tensors sharing bytes: the second starts inside the first (128 bytes at 0), or at the same offset
    put_header(&b, 3, 2, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 0); put_tensor_info(&b, "v", 1, dims1, TYPE_F32, 96);
    while (b.size % 32) { put_zeros(&b, 1); } put_zeros(&b, 256);
    expect_error(&b, "overlapping tensors", "tensor 'v' (data offset 96) overlaps tensor 'w' (128 bytes at data offset 0)", NULL);
    put_header(&b, 3, 2, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 128); put_tensor_info(&b, "v", 1, dims1, TYPE_F32, 128);
    while (b.size % 32) { put_zeros(&b, 1); } put_zeros(&b, 256);
    expect_error(&b, "aliased tensors", "overlaps tensor", "expected every tensor's data apart");
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 1ULL << 63); while (b.size % 32) { put_zeros(&b, 1); } put_zeros(&b, 128);
    expect_error(&b, "tensor offset huge", "lies past the end of the file", NULL);
    put_header(&b, 3, 1, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 0); put_zeros(&b, 1);
    expect_error(&b, "data section past end", "truncated data: the data section starts at byte", NULL);
    put_header(&b, 3, 2, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 0); put_tensor_info(&b, "w", 1, dims1, TYPE_F32, 128);
    while (b.size % 32) { put_zeros(&b, 1); } put_zeros(&b, 256);
    expect_error(&b, "duplicate tensor", "duplicate tensor name 'w'", NULL);
    put_header(&b, 3, 1, 0); put_string(&b, "w"); put_u32(&b, 2); put_u64(&b, 32); put_u32(&b, TYPE_F32); put_u64(&b, 0);   // claims 2 dims, has 1
    expect_error(&b, "truncated tensor info", "truncated header at byte", "of tensor 'w'");
    // an empty file through gguf_open (mmap cannot map 0 bytes)
    char empty_path[96];
    snprintf(empty_path, sizeof(empty_path), "/tmp/aurora_test_gguf_empty_%d.gguf", (int)getpid());
    FILE* f = fopen(empty_path, "wb");
    if (f) { fclose(f); }
    GGUFFile gguf;
    Error err = {{0}};
    CHECK(gguf_open(&gguf, empty_path, &err) == -1 && strstr(err.message, "truncated header at byte 0 while reading the magic"), "empty: %s", err.message);
    remove(empty_path);
    group_end("malformed files: header, values, alignment, tensors");
}

// Every proper prefix of a valid file must fail cleanly (exactly-sized buffers catch overreads).
static void test_truncation(const uint8_t* bytes, size_t size, const char* what) {
    int unexpected = 0;
    char message[128];
    for (size_t length = 0; length <= size; length++) {
        GGUFFile gguf;
        Error err = {{0}};
        uint8_t* copy;
        int status = open_exact(&gguf, bytes, length, &err, &copy);
        int want = length == size ? 0 : -1;
        if (status != want || (status == -1 && strncmp(err.message, "test.gguf: ", 11) != 0)) {
            if (unexpected++ < 3) { printf("  prefix %zu of %zu: status %d: %s\n", length, size, status, err.message); }
        }
        if (status == 0) { gguf_close(&gguf); }
        free(copy);
    }
    CHECK(unexpected == 0, "%d prefixes misbehaved", unexpected);
    snprintf(message, sizeof(message), "truncation: all %zu prefixes of the %s fail cleanly", size, what);
    group_end(message);
}

// Touches everything a successfully opened file offers, as a program would.
static void exercise_file(const GGUFFile* gguf) {
    for (uint64_t i = 0; i < gguf->n_values; i++) {
        Error err;
        int64_t integer; double real; int flag; char* text = NULL; char** strings = NULL; int32_t* ints = NULL; uint64_t count = 0;
        const char* key = gguf->values[i].key;
        gguf_get_int(gguf, key, &integer, &err);
        gguf_get_float(gguf, key, &real, &err);
        gguf_get_bool(gguf, key, &flag, &err);
        if (gguf_get_string(gguf, key, &text, &err) == 0) { free(text); }
        if (gguf_get_string_array(gguf, key, &strings, &count, &err) == 0) { free_string_array(strings, count); }
        if (gguf_get_int_array(gguf, key, &ints, &count, &err) == 0) { free(ints); }
    }
    for (uint64_t i = 0; i < gguf->n_tensors; i++) {
        const GGUFTensor* tensor = &gguf->tensors[i];
        if (tensor->n_elements > (1 << 22)) { continue; }
        float* values = mallocCheck((size_t)tensor->n_elements * sizeof(float));
        gguf_tensor_to_f32(tensor, values);
        free(values);
    }
}

// Random byte flips of a valid file: opening must never crash or read out of bounds.
static void test_random_corruption(const uint8_t* bytes, size_t size, int rounds, const char* what) {
    uint8_t* mutated = mallocCheck(size);
    int opened = 0;
    for (int round = 0; round < rounds; round++) {
        memcpy(mutated, bytes, size);
        int flips = 1 + (int)(test_random_u32() % 8);
        for (int k = 0; k < flips; k++) {
            size_t position = test_random_u32() % size;
            // mostly in the header, where the structure lives
            if (test_random_u32() % 4 != 0 && size > 512) { position = test_random_u32() % 512; }
            mutated[position] = test_random_u32() % 2 ? (uint8_t)test_random_u32() : (uint8_t)(mutated[position] ^ (1u << (test_random_u32() % 8)));
        }
        size_t length = test_random_u32() % 8 == 0 ? test_random_u32() % (size + 1) : size;
        GGUFFile gguf;
        Error err;
        uint8_t* copy;
        if (open_exact(&gguf, mutated, length, &err, &copy) == 0) { opened++; exercise_file(&gguf); gguf_close(&gguf); }
        free(copy);
    }
    free(mutated);
    CHECK(1, "survived");
    char message[128];
    snprintf(message, sizeof(message), "corruption: %d random mutations of the %s (%d opened)", rounds, what, opened);
    group_end(message);
}

// The model file of the project, if present: a real llama.cpp-written GGUF.
static void test_real_model(void) {
    const char* path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    FILE* probe = fopen(path, "rb");
    if (probe == NULL) { printf("%-58s skipped (no %s)\n", "real model file", path); return; }
    fclose(probe);
    GGUFFile gguf;
    Error err = {{0}};
    int status = gguf_open(&gguf, path, &err);
    CHECK(status == 0, "open: %s", err.message);
    if (status == 0) {
        int64_t layers = 0; char** tokens = NULL; uint64_t n_tokens = 0; char* architecture = NULL;
        CHECK(gguf_get_string(&gguf, "general.architecture", &architecture, &err) == 0 && strcmp(architecture, "llama") == 0, "architecture");
        free(architecture);
        CHECK(gguf_get_int(&gguf, "llama.block_count", &layers, &err) == 0 && layers == 30, "block_count");
        CHECK(gguf_get_string_array(&gguf, "tokenizer.ggml.tokens", &tokens, &n_tokens, &err) == 0 && n_tokens == 49152, "tokens");
        free_string_array(tokens, n_tokens);
        const GGUFTensor* embedding = gguf_find_tensor(&gguf, "token_embd.weight");
        CHECK(embedding && embedding->shape[0] == 576 && embedding->shape[1] == 49152, "token_embd shape");
        if (embedding) {
            float* row = mallocCheck((size_t)embedding->n_elements * sizeof(float));
            gguf_tensor_to_f32(embedding, row);
            int finite = 1;
            for (int64_t i = 0; i < embedding->n_elements; i++) { finite &= isfinite(row[i]) != 0; }
            CHECK(finite, "token_embd values finite");
            free(row);
        }
        gguf_close(&gguf);
    }
    group_end("real model file (SmolLM2 Q4_1) opens and reads");
}

static void write_file(const char* directory, const char* name, const uint8_t* bytes, size_t size) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", directory, name);
    FILE* f = fopen(path, "wb");
    if (f == NULL) { printf("cannot write %s\n", path); return; }
    fwrite(bytes, 1, size, f);
    fclose(f);
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);   // keep the lines before a sanitizer report
    test_fp16();
    test_bf16();
    test_type_table();
    test_quantize_error_bounds();
    test_known_blocks();
    test_round_trip();
    test_conversion();
    test_nested_arrays();
    test_getter_errors();
    test_malformed();
    test_claimed_count_memory();

    GGUFWriter* writer = build_round_trip_writer(0);
    GGUFBuffer written = {0};
    written.size = written.capacity = gguf_writer_to_memory(writer, &written.data);
    gguf_writer_free(writer);
    GGUFBuffer nested = {0};
    build_nested_file(&nested, 3);
    test_truncation(written.data, written.size, "writer's file");
    test_truncation(nested.data, nested.size, "nested-array file");
    test_random_corruption(written.data, written.size, 20000, "writer's file");
    test_random_corruption(nested.data, nested.size, 20000, "nested-array file");
    test_real_model();
    if (argc > 1) {   // seeds for the fuzzer
        write_file(argv[1], "written.gguf", written.data, written.size);
        write_file(argv[1], "nested.gguf", nested.data, nested.size);
    }
    free(written.data);
    free(nested.data);

    printf("%d passed, %d failed\n", checks_passed, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}
