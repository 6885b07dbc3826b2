/*
gguf.c: tensor types and GGUF files.

Contract:
  - Tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_1 with ggml's block layouts and numbering. quantize_row
    follows ggml's reference quantisers (quantize_row_*_ref), so files we write match llama.cpp's.
    The integer types I32 and I64 (index maps, such as the d2t of llama.cpp's eagle3 drafts) convert
    to and from float by value.
  - gguf_open / gguf_open_memory read GGUF versions 2 and 3 and validate everything before returning:
    every read is bounds-checked, every count is bounded by the bytes left in the file before anything
    is allocated for it, and every tensor must lie inside the file. A malformed file is an Error that
    names the file, the key or tensor, and what was expected; it is never a crash.
  - The GGUFFile keeps pointers into the bytes (strings, arrays, tensor data): they stay valid until
    gguf_close. Multi-byte fields are decoded byte by byte (GGUF is little-endian); tensor data of
    type F32 is copied as is, which assumes a little-endian host.
  - The writer collects metadata (serialised immediately) and tensors (quantised immediately) and
    writes a version-3 file, padding with zero bytes to the alignment.
Included into aurora.c after util.c: private helpers are static and prefixed gguf_ or tensor_.
*/
#include "aurora.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// fp16 and bf16 <-> fp32, by hand (round to nearest even; subnormals, inf and nan handled)

static uint32_t tensor_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float tensor_bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f;
    uint32_t mantissa = h & 0x3ff;
    if (exponent == 0x1f) {                       // inf or nan (payload kept)
        return tensor_bits_float(sign | 0x7f800000 | (mantissa << 13));
    }
    if (exponent == 0) {
        if (mantissa == 0) { return tensor_bits_float(sign); }  // +-0
        // subnormal: shift the mantissa up until its leading 1 becomes the implicit bit
        int shift = 0;
        while ((mantissa & 0x400) == 0) { mantissa <<= 1; shift++; }
        mantissa &= 0x3ff;
        return tensor_bits_float(sign | ((uint32_t)(113 - shift) << 23) | (mantissa << 13));
    }
    return tensor_bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));  // rebias 15 -> 127
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x = tensor_float_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000) { return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff)); }  // nan, kept quiet
    if (x >= 0x477ff000) { return (uint16_t)(sign | 0x7c00); }  // >= 65520 rounds (ties to even) to inf
    uint32_t exponent = x >> 23;
    if (exponent < 113) {
        // below 2^-14: a half subnormal, counted in units of 2^-24. value = m24 * 2^(e-150), so
        // the unit count is m24 >> (126 - e), rounded to nearest even.
        uint32_t shift = 126 - exponent;
        if (shift > 24) { return sign; }          // below 2^-25 (or a float subnormal): rounds to 0
        uint32_t mantissa = (x & 0x7fffff) | 0x800000;
        uint32_t units = mantissa >> shift;
        uint32_t remainder = mantissa & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (remainder > half || (remainder == half && (units & 1))) { units++; }
        return (uint16_t)(sign | units);          // units == 0x400 is correctly the smallest normal
    }
    // normal: rebias the exponent, keep 10 mantissa bits, round the 13 dropped bits to nearest even
    // (a carry out of the mantissa correctly bumps the exponent)
    uint32_t h = ((exponent - 112) << 10) | ((x >> 13) & 0x3ff);
    uint32_t remainder = x & 0x1fff;
    if (remainder > 0x1000 || (remainder == 0x1000 && (h & 1))) { h++; }
    return (uint16_t)(sign | h);
}

float bf16_to_fp32(uint16_t h) { return tensor_bits_float((uint32_t)h << 16); }

uint16_t fp32_to_bf16(float f) {
    uint32_t x = tensor_float_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) { return (uint16_t)((x >> 16) | 0x40); }  // nan, kept quiet
    x += 0x7fff + ((x >> 16) & 1);               // round to nearest even (overflow gives inf)
    return (uint16_t)(x >> 16);
}

// ----------------------------------------------------------------------------
// tensor types: block sizes, names, (de)quantisation

#define TENSOR_QK 32   // elements per block of every quantised type here

// Each supported type: ggml number, name, elements per block, bytes per block.
typedef struct { int type; const char* name; int64_t block_size; size_t block_bytes; } TensorTypeInfo;
static const TensorTypeInfo tensor_types[] = {
    { TYPE_F32,  "F32",  1, 4 },
    { TYPE_F16,  "F16",  1, 2 },
    { TYPE_Q4_0, "Q4_0", TENSOR_QK, 2 + TENSOR_QK / 2 },       // fp16 d, uint8 qs[16]
    { TYPE_Q4_1, "Q4_1", TENSOR_QK, 2 + 2 + TENSOR_QK / 2 },   // fp16 d, fp16 m, uint8 qs[16]
    { TYPE_Q8_0, "Q8_0", TENSOR_QK, 2 + TENSOR_QK },           // fp16 d, int8 qs[32]
    { TYPE_BF16, "BF16", 1, 2 },
    { TYPE_I32,  "I32",  1, 4 },                                // integer values (index maps such as d2t)
    { TYPE_I64,  "I64",  1, 8 },
};

static const TensorTypeInfo* tensor_type_info(int type) {
    for (size_t i = 0; i < sizeof(tensor_types) / sizeof(tensor_types[0]); i++) {
        if (tensor_types[i].type == type) { return &tensor_types[i]; }
    }
    return NULL;
}

int tensor_type_supported(int type) { return tensor_type_info(type) != NULL; }
int tensor_type_is_integer(int type) { return type == TYPE_I32 || type == TYPE_I64; }
const char* tensor_type_name(int type) { return tensor_type_info(type) ? tensor_type_info(type)->name : "unknown"; }
int64_t tensor_type_block_size(int type) { return tensor_type_info(type) ? tensor_type_info(type)->block_size : 0; }
size_t tensor_type_block_bytes(int type) { return tensor_type_info(type) ? tensor_type_info(type)->block_bytes : 0; }

size_t tensor_bytes(int type, int64_t n) {
    int64_t block = tensor_type_block_size(type);
    if (block == 0 || n < 0 || n % block != 0) { return 0; }
    uint64_t n_blocks = (uint64_t)(n / block);
    size_t block_bytes = tensor_type_block_bytes(type);
    if (n_blocks > SIZE_MAX / block_bytes) { return 0; }   // would not fit in memory anyway
    return (size_t)n_blocks * block_bytes;
}

// Misuse by the program (not bad input): an unsupported type or a partial block.
static void tensor_check_row(int type, int64_t n, const char* function) {
    int64_t block = tensor_type_block_size(type);
    if (block == 0 || n < 0 || n % block != 0) {
        fprintf(stderr, "error: %s: type %d (%s) with %lld elements (need a supported type and a "
                "multiple of its block size)\n", function, type, tensor_type_name(type), (long long)n);
        exit(EXIT_FAILURE);
    }
}

static uint16_t tensor_load_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void tensor_store_u16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

// Converts a float to an int in [low, high]. Clamping in float first keeps the conversion defined
// for nan and inf inputs (nan becomes low); on ordinary values it truncates like ggml's int casts.
static int tensor_clamp_to_int(float v, int low, int high) {
    if (!(v >= (float)low)) { return low; }
    if (v > (float)high) { return high; }
    return (int)v;
}

void dequantize_row(int type, const void* source, float* destination, int64_t n) {
    tensor_check_row(type, n, "dequantize_row");
    const uint8_t* bytes = (const uint8_t*)source;
    if (type == TYPE_F32) { memcpy(destination, bytes, (size_t)n * 4); return; }
    if (type == TYPE_F16 || type == TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = tensor_load_u16(bytes + 2 * i);
            destination[i] = type == TYPE_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
        }
        return;
    }
    if (tensor_type_is_integer(type)) {   // little-endian integers, converted by value
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            if (type == TYPE_I32) { int32_t v32; memcpy(&v32, bytes + 4 * i, 4); v = v32; } else { memcpy(&v, bytes + 8 * i, 8); }
            destination[i] = (float)v;
        }
        return;
    }
    size_t block_bytes = tensor_type_block_bytes(type);
    for (int64_t b = 0; b < n / TENSOR_QK; b++) {
        const uint8_t* block = bytes + (size_t)b * block_bytes;
        float* out = destination + b * TENSOR_QK;
        float d = fp16_to_fp32(tensor_load_u16(block));
        if (type == TYPE_Q8_0) {
            for (int j = 0; j < TENSOR_QK; j++) { out[j] = d * (float)(int8_t)block[2 + j]; }
        } else if (type == TYPE_Q4_0) {
            // element j is the low nibble of qs[j], element j + 16 the high nibble
            const uint8_t* qs = block + 2;
            for (int j = 0; j < TENSOR_QK / 2; j++) {
                out[j] = d * (float)((qs[j] & 0x0f) - 8);
                out[j + TENSOR_QK / 2] = d * (float)((qs[j] >> 4) - 8);
            }
        } else {  // Q4_1
            float m = fp16_to_fp32(tensor_load_u16(block + 2));
            const uint8_t* qs = block + 4;
            for (int j = 0; j < TENSOR_QK / 2; j++) {
                out[j] = d * (float)(qs[j] & 0x0f) + m;
                out[j + TENSOR_QK / 2] = d * (float)(qs[j] >> 4) + m;
            }
        }
    }
}

// Q8_0: d = max|x| / 127, q = round(x / d).
static void tensor_quantize_block_q8_0(const float* x, uint8_t* block) {
    float amax = 0.0f;
    for (int j = 0; j < TENSOR_QK; j++) { amax = fmaxf(amax, fabsf(x[j])); }
    float d = amax / 127.0f;
    float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    tensor_store_u16(block, fp32_to_fp16(d));
    for (int j = 0; j < TENSOR_QK; j++) {
        block[2 + j] = (uint8_t)(int8_t)tensor_clamp_to_int(roundf(x[j] * inverse), -127, 127);
    }
}

// Q4_0: the value of largest magnitude maps to q = 0 exactly (d = that value / -8), so the range is
// used asymmetrically: q = trunc(x / d + 8.5), clamped to 15, i.e. rounded half up.
static void tensor_quantize_block_q4_0(const float* x, uint8_t* block) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < TENSOR_QK; j++) {
        if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
    }
    float d = max / -8.0f;
    float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    tensor_store_u16(block, fp32_to_fp16(d));
    for (int j = 0; j < TENSOR_QK / 2; j++) {
        int low = tensor_clamp_to_int(x[j] * inverse + 8.5f, 0, 15);
        int high = tensor_clamp_to_int(x[j + TENSOR_QK / 2] * inverse + 8.5f, 0, 15);
        block[2 + j] = (uint8_t)(low | (high << 4));
    }
}

// Q4_1: min and max map to q = 0 and 15: d = (max - min) / 15, m = min, q = round_half_up((x - m) / d).
static void tensor_quantize_block_q4_1(const float* x, uint8_t* block) {
    float min = x[0], max = x[0];
    for (int j = 1; j < TENSOR_QK; j++) { min = fminf(min, x[j]); max = fmaxf(max, x[j]); }
    float d = (max - min) / 15.0f;
    float inverse = d != 0.0f ? 1.0f / d : 0.0f;
    tensor_store_u16(block, fp32_to_fp16(d));
    tensor_store_u16(block + 2, fp32_to_fp16(min));
    for (int j = 0; j < TENSOR_QK / 2; j++) {
        int low = tensor_clamp_to_int((x[j] - min) * inverse + 0.5f, 0, 15);
        int high = tensor_clamp_to_int((x[j + TENSOR_QK / 2] - min) * inverse + 0.5f, 0, 15);
        block[4 + j] = (uint8_t)(low | (high << 4));
    }
}

void quantize_row(int type, const float* source, void* destination, int64_t n) {
    tensor_check_row(type, n, "quantize_row");
    uint8_t* bytes = (uint8_t*)destination;
    if (type == TYPE_F32) { memcpy(bytes, source, (size_t)n * 4); return; }
    if (type == TYPE_F16 || type == TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            tensor_store_u16(bytes + 2 * i, type == TYPE_F16 ? fp32_to_fp16(source[i]) : fp32_to_bf16(source[i]));
        }
        return;
    }
    if (tensor_type_is_integer(type)) {   // rounded to the nearest integer (NaN to 0), saturating
        for (int64_t i = 0; i < n; i++) {
            double x = isnan(source[i]) ? 0.0 : nearbyint((double)source[i]);
            int64_t v = x >= 9.2e18 ? INT64_MAX : x <= -9.2e18 ? INT64_MIN : (int64_t)x;
            if (type == TYPE_I32) {
                int32_t v32 = v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
                memcpy(bytes + 4 * i, &v32, 4);
            } else {
                memcpy(bytes + 8 * i, &v, 8);
            }
        }
        return;
    }
    size_t block_bytes = tensor_type_block_bytes(type);
    for (int64_t b = 0; b < n / TENSOR_QK; b++) {
        const float* x = source + b * TENSOR_QK;
        uint8_t* block = bytes + (size_t)b * block_bytes;
        if (type == TYPE_Q8_0) { tensor_quantize_block_q8_0(x, block); }
        else if (type == TYPE_Q4_0) { tensor_quantize_block_q4_0(x, block); }
        else { tensor_quantize_block_q4_1(x, block); }
    }
}

// ----------------------------------------------------------------------------
// GGUF value types

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8          // arrays of arrays nest at most this deep

static const char* gguf_type_name(uint32_t type) {
    static const char* names[] = { "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                   "bool", "string", "array", "uint64", "int64", "float64" };
    return type <= GGUF_TYPE_FLOAT64 ? names[type] : "invalid";
}

// Bytes of one value of a fixed-size type; 0 for string and array (and invalid types).
static size_t gguf_type_size(uint32_t type) {
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

static int gguf_type_is_integer(uint32_t type) {
    return type <= GGUF_TYPE_INT32 || type == GGUF_TYPE_UINT64 || type == GGUF_TYPE_INT64;
}

static uint64_t gguf_load_u64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) { v = (v << 8) | p[i]; }
    return v;
}
static uint32_t gguf_load_u32(const uint8_t* p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

// Decodes a fixed-size scalar at p into value->integer / uinteger / real.
static void gguf_decode_scalar(uint32_t type, const uint8_t* p, GGUFValue* value) {
    uint64_t bits = 0;
    for (size_t i = gguf_type_size(type); i-- > 0;) { bits = (bits << 8) | p[i]; }
    switch (type) {
        case GGUF_TYPE_INT8: value->integer = (int8_t)bits; break;
        case GGUF_TYPE_INT16: value->integer = (int16_t)bits; break;
        case GGUF_TYPE_INT32: value->integer = (int32_t)bits; break;
        case GGUF_TYPE_INT64: value->integer = (int64_t)bits; break;
        case GGUF_TYPE_FLOAT32: value->real = tensor_bits_float((uint32_t)bits); break;
        case GGUF_TYPE_FLOAT64: memcpy(&value->real, &bits, 8); break;
        default: value->integer = (int64_t)bits; break;   // unsigned types and bool
    }
    if (type == GGUF_TYPE_FLOAT32 || type == GGUF_TYPE_FLOAT64) {
        value->integer = 0; value->uinteger = 0;
    } else {
        int is_signed = type == GGUF_TYPE_INT8 || type == GGUF_TYPE_INT16 || type == GGUF_TYPE_INT32 || type == GGUF_TYPE_INT64;
        value->uinteger = is_signed ? (uint64_t)value->integer : bits;
        value->real = is_signed ? (double)value->integer : (double)bits;
    }
}

// ----------------------------------------------------------------------------
// GGUF reader: a bounds-checked cursor over the file bytes

typedef struct {
    const uint8_t* bytes;
    size_t size;
    size_t position;
    const char* path;
    Error* err;
    char context[160];          // what is being parsed, e.g. "key 'general.name'", for messages
} GGUFReader;

// Fails unless n more bytes can be read; `what` says what they are for.
static int gguf_need(GGUFReader* r, uint64_t n, const char* what) {
    size_t left = r->size - r->position;
    if (n > left) {
        return error_set(r->err, "%s: truncated header at byte %zu while reading %s of %s (need %llu bytes, %zu left)",
                         r->path, r->position, what, r->context, (unsigned long long)n, left);
    }
    return 0;
}

static int gguf_read_u32(GGUFReader* r, uint32_t* out, const char* what) {
    if (gguf_need(r, 4, what) != 0) { return -1; }
    *out = gguf_load_u32(r->bytes + r->position);
    r->position += 4;
    return 0;
}

static int gguf_read_u64(GGUFReader* r, uint64_t* out, const char* what) {
    if (gguf_need(r, 8, what) != 0) { return -1; }
    *out = gguf_load_u64(r->bytes + r->position);
    r->position += 8;
    return 0;
}

// A GGUF string: uint64 length, then that many bytes (no terminator). Returns a pointer into the file.
static int gguf_read_string(GGUFReader* r, const char** out, uint64_t* length, const char* what) {
    if (gguf_read_u64(r, length, what) != 0) { return -1; }
    size_t left = r->size - r->position;
    if (*length > left) {
        return error_set(r->err, "%s: %s of %s at byte %zu has length %llu, more than the %zu bytes left in the file",
                         r->path, what, r->context, r->position - 8, (unsigned long long)*length, left);
    }
    *out = (const char*)r->bytes + r->position;
    r->position += (size_t)*length;
    return 0;
}

// A NUL-terminated copy of length bytes of text.
static char* gguf_copy_string(const char* text, size_t length) {
    char* copy = mallocCheck(length + 1);
    memcpy(copy, text, length);
    copy[length] = '\0';
    return copy;
}

// Reads a string that must become a C string (a key or tensor name): no NUL byte inside.
static int gguf_read_name(GGUFReader* r, char** out, const char* what) {
    const char* text;
    uint64_t length;
    if (gguf_read_string(r, &text, &length, what) != 0) { return -1; }
    if (memchr(text, 0, (size_t)length) != NULL) {
        return error_set(r->err, "%s: %s of %s contains a NUL byte", r->path, what, r->context);
    }
    *out = gguf_copy_string(text, (size_t)length);
    return 0;
}

static int gguf_check_value_type(GGUFReader* r, uint32_t type, const char* what) {
    if (type > GGUF_TYPE_FLOAT64) {
        return error_set(r->err, "%s: %s of %s is %u, not a valid GGUF value type (expected 0..12)",
                         r->path, what, r->context, type);
    }
    return 0;
}

// Reads an array body (element type, count, elements), arrays of arrays included up to
// GGUF_MAX_ARRAY_DEPTH. The count is checked against the bytes left before anything is walked.
static int gguf_read_array(GGUFReader* r, uint32_t* element_type, uint64_t* count, const uint8_t** raw, int depth) {
    if (depth > GGUF_MAX_ARRAY_DEPTH) {
        return error_set(r->err, "%s: arrays in %s are nested more than %d deep", r->path, r->context, GGUF_MAX_ARRAY_DEPTH);
    }
    if (gguf_read_u32(r, element_type, "the array element type") != 0) { return -1; }
    if (gguf_check_value_type(r, *element_type, "the array element type") != 0) { return -1; }
    if (gguf_read_u64(r, count, "the array length") != 0) { return -1; }
    // smallest possible element: its fixed size, a string's length field, or a nested array's header
    size_t fixed = gguf_type_size(*element_type);
    size_t smallest = fixed ? fixed : (*element_type == GGUF_TYPE_STRING ? 8 : 12);
    size_t left = r->size - r->position;
    if (*count > left / smallest) {
        return error_set(r->err, "%s: array of %s in %s claims %llu elements, "
                         "but the %zu bytes left in the file hold at most %zu",
                         r->path, gguf_type_name(*element_type), r->context, (unsigned long long)*count, left, left / smallest);
    }
    *raw = r->bytes + r->position;
    if (*element_type == GGUF_TYPE_BOOL) {   // (each a byte, 0 or 1, as a single bool value must be)
        for (uint64_t i = 0; i < *count; i++) {
            if (r->bytes[r->position + i] > 1) {
                return error_set(r->err, "%s: array of bool in %s holds %u at element %llu (expected 0 or 1)", r->path,
                                 r->context, (unsigned)r->bytes[r->position + i], (unsigned long long)i);
            }
        }
    }
    if (fixed) { r->position += (size_t)*count * fixed; return 0; }
    for (uint64_t i = 0; i < *count; i++) {
        if (*element_type == GGUF_TYPE_STRING) {
            const char* text;
            uint64_t length;
            if (gguf_read_string(r, &text, &length, "an array string") != 0) { return -1; }
        } else {
            uint32_t inner_type;
            uint64_t inner_count;
            const uint8_t* inner_raw;
            if (gguf_read_array(r, &inner_type, &inner_count, &inner_raw, depth + 1) != 0) { return -1; }
        }
    }
    return 0;
}

// Reads one value of the given (already validated) type into value.
static int gguf_read_value(GGUFReader* r, uint32_t type, GGUFValue* value) {
    if (type == GGUF_TYPE_STRING) {
        return gguf_read_string(r, &value->string, &value->string_length, "the string value");
    }
    if (type == GGUF_TYPE_ARRAY) {
        return gguf_read_array(r, &value->array_type, &value->array_count, &value->array_raw, 1);
    }
    size_t size = gguf_type_size(type);
    if (gguf_need(r, size, "the value") != 0) { return -1; }
    gguf_decode_scalar(type, r->bytes + r->position, value);
    r->position += size;
    if (type == GGUF_TYPE_BOOL && value->uinteger > 1) {
        return error_set(r->err, "%s: %s is a bool with value %llu (expected 0 or 1)",
                         r->path, r->context, (unsigned long long)value->uinteger);
    }
    return 0;
}

// Magic, version and the two counts. Each count is bounded by the bytes left before it is used to
// allocate: a key/value takes at least 13 bytes (8 name length, 4 type, 1 value) and a tensor
// description at least 32 (8 name length, 4 n_dims, 8 one dimension, 4 type, 8 offset).
static int gguf_read_header(GGUFReader* r, GGUFFile* gguf, uint64_t* n_values, uint64_t* n_tensors) {
    snprintf(r->context, sizeof(r->context), "the header");
    if (gguf_need(r, 4, "the magic") != 0) { return -1; }
    const uint8_t* magic = r->bytes;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
        return error_set(r->err, "%s: not a GGUF file (first bytes are %02x %02x %02x %02x, expected \"GGUF\")",
                         r->path, magic[0], magic[1], magic[2], magic[3]);
    }
    r->position = 4;
    if (gguf_read_u32(r, &gguf->version, "the version") != 0) { return -1; }
    // version 1 had 32-bit counts; 2 and 3 share one layout (3 merely allows big-endian files)
    if (gguf->version == 0x02000000u || gguf->version == 0x03000000u) {   // (2 or 3 with its bytes swapped)
        return error_set(r->err, "%s: a big-endian GGUF file (version %u, stored byte-swapped); expected a little-endian "
                         "one", r->path, gguf->version >> 24);
    }
    if (gguf->version != 2 && gguf->version != 3) {
        return error_set(r->err, "%s: unsupported GGUF version %u (expected 2 or 3)", r->path, gguf->version);
    }
    if (gguf_read_u64(r, n_tensors, "the tensor count") != 0) { return -1; }
    if (gguf_read_u64(r, n_values, "the key/value count") != 0) { return -1; }
    size_t left = r->size - r->position;
    // (models hold some tens of keys and at most a few thousand tensors; a file claiming more than these bounds
    // is refused before anything is read: past them the writer's checks of a copy grow quadratically)
    if (*n_values > GGUF_MAX_KEYS) {
        return error_set(r->err, "%s: header claims %llu key/value pairs; expected at most %d", r->path,
                         (unsigned long long)*n_values, GGUF_MAX_KEYS);
    }
    if (*n_tensors > GGUF_MAX_TENSORS) {
        return error_set(r->err, "%s: header claims %llu tensors; expected at most %d", r->path,
                         (unsigned long long)*n_tensors, GGUF_MAX_TENSORS);
    }
    if (*n_values > left / 13) {
        return error_set(r->err, "%s: header claims %llu key/value pairs, "
                         "but the %zu bytes left in the file hold at most %zu",
                         r->path, (unsigned long long)*n_values, left, left / 13);
    }
    if (*n_tensors > left / 32) {
        return error_set(r->err, "%s: header claims %llu tensors, "
                         "but the %zu bytes left in the file hold at most %zu tensor descriptions",
                         r->path, (unsigned long long)*n_tensors, left, left / 32);
    }
    return 0;
}

// Makes room for element i of an array of elements of `size` bytes (capacity in elements), doubling up to
// the header's count, new elements zeroed. The header's counts are bounded by the bytes left in the file,
// but an element in memory is larger than its least size there (a GGUFValue is 80 bytes, a key at least 13
// in the file), so a corrupt count allocating them all up front asked for about 6 times the file.
static void* gguf_room_for(void* array, uint64_t* capacity, uint64_t i, uint64_t count, size_t size) {
    if (i < *capacity) { return array; }
    uint64_t grown = *capacity ? 2 * *capacity : 64;
    if (grown > count) { grown = count; }
    void* larger = callocCheck((size_t)grown, size);
    if (*capacity) { memcpy(larger, array, (size_t)*capacity * size); }
    free(array);
    *capacity = grown;
    return larger;
}

// The key/value section. gguf->n_values counts the keys read so far, so gguf_close frees exactly those.
static int gguf_read_metadata(GGUFReader* r, GGUFFile* gguf, uint64_t n_values) {
    uint64_t capacity = 0;
    for (uint64_t i = 0; i < n_values; i++) {
        gguf->values = gguf_room_for(gguf->values, &capacity, i, n_values, sizeof(GGUFValue));
        GGUFValue* value = &gguf->values[i];
        snprintf(r->context, sizeof(r->context), "key #%llu", (unsigned long long)i);
        if (gguf_read_name(r, &value->key, "the name") != 0) { return -1; }
        gguf->n_values = i + 1;
        snprintf(r->context, sizeof(r->context), "key '%.100s'", value->key);
        if (gguf_read_u32(r, &value->type, "the value type") != 0) { return -1; }
        if (gguf_check_value_type(r, value->type, "the value type") != 0) { return -1; }
        if (gguf_read_value(r, value->type, value) != 0) { return -1; }
    }
    return 0;
}

static const char* gguf_supported_types = "F32=0, F16=1, Q4_0=2, Q4_1=3, Q8_0=8, I32=26, I64=27, BF16=30";

// Checks a tensor's type and shape and fills shape, n_elements and n_bytes.
static int gguf_set_tensor_shape(GGUFReader* r, GGUFTensor* tensor, uint32_t n_dims, const uint64_t* dims, uint32_t type) {
    if (type > 255 || !tensor_type_supported((int)type)) {   // (the cast is safe once small)
        return error_set(r->err, "%s: %s has unknown tensor type %u (supported: %s)",
                         r->path, r->context, type, gguf_supported_types);
    }
    tensor->type = (int)type;
    tensor->n_dims = (int)n_dims;
    int64_t n_elements = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (dims[d] == 0 || dims[d] > (uint64_t)INT64_MAX / (uint64_t)n_elements) {
            return error_set(r->err, "%s: %s has dimension %d of size %llu "
                             "(expected a size >= 1, with at most 2^63-1 elements in all)",
                             r->path, r->context, d, (unsigned long long)dims[d]);
        }
        tensor->shape[d] = (int64_t)dims[d];
        n_elements *= (int64_t)dims[d];
    }
    tensor->n_elements = n_elements;
    int64_t block = tensor_type_block_size(tensor->type);
    if (tensor->shape[0] % block != 0) {
        return error_set(r->err, "%s: %s has rows of %lld elements, not a multiple of the %s block size %lld",
                         r->path, r->context, (long long)tensor->shape[0], tensor_type_name(tensor->type), (long long)block);
    }
    tensor->n_bytes = tensor_bytes(tensor->type, n_elements);
    if (tensor->n_bytes == 0) {
        return error_set(r->err, "%s: %s has %lld elements, too many to address", r->path, r->context, (long long)n_elements);
    }
    return 0;
}

// The tensor descriptions: name, n_dims, dims, type, offset. gguf->n_tensors counts those read.
static int gguf_read_tensor_infos(GGUFReader* r, GGUFFile* gguf, uint64_t n_tensors) {
    uint64_t capacity = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf->tensors = gguf_room_for(gguf->tensors, &capacity, i, n_tensors, sizeof(GGUFTensor));
        GGUFTensor* tensor = &gguf->tensors[i];
        snprintf(r->context, sizeof(r->context), "tensor #%llu", (unsigned long long)i);
        if (gguf_read_name(r, &tensor->name, "the name") != 0) { return -1; }
        gguf->n_tensors = i + 1;
        snprintf(r->context, sizeof(r->context), "tensor '%.100s'", tensor->name);
        uint32_t n_dims, type;
        if (gguf_read_u32(r, &n_dims, "the number of dimensions") != 0) { return -1; }
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
            return error_set(r->err, "%s: %s has %u dimensions (expected 1 to %d)", r->path, r->context, n_dims, GGUF_MAX_DIMS);
        }
        uint64_t dims[GGUF_MAX_DIMS] = {1, 1, 1, 1};
        for (uint32_t d = 0; d < n_dims; d++) {
            if (gguf_read_u64(r, &dims[d], "a dimension") != 0) { return -1; }
        }
        if (gguf_read_u32(r, &type, "the type") != 0) { return -1; }
        if (gguf_read_u64(r, &tensor->offset, "the data offset") != 0) { return -1; }
        if (gguf_set_tensor_shape(r, tensor, n_dims, dims, type) != 0) { return -1; }
    }
    return 0;
}

// general.alignment, if present, must be a uint32 power of two; otherwise the default applies.
static int gguf_read_alignment(GGUFFile* gguf, Error* err) {
    gguf->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GGUFValue* value = gguf_find(gguf, "general.alignment");
    if (value == NULL) { return 0; }
    if (value->type != GGUF_TYPE_UINT32) {
        return error_set(err, "%s: key 'general.alignment' has type %s, expected uint32",
                         gguf->path, gguf_type_name(value->type));
    }
    if (value->uinteger == 0 || (value->uinteger & (value->uinteger - 1)) != 0) {
        return error_set(err, "%s: key 'general.alignment' is %llu, expected a nonzero power of two",
                         gguf->path, (unsigned long long)value->uinteger);
    }
    gguf->alignment = value->uinteger;
    return 0;
}

static int gguf_compare_names(const void* a, const void* b) {
    return strcmp(*(char* const*)a, *(char* const*)b);
}

// Duplicate keys or tensor names would make lookups ambiguous: sort a copy of the names and compare
// neighbours (n log n, so a file with many entries cannot make this quadratic).
static int gguf_check_unique(const GGUFFile* gguf, char** names, size_t count, const char* what, Error* err) {
    qsort(names, count, sizeof(char*), gguf_compare_names);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            return error_set(err, "%s: duplicate %s '%.200s'", gguf->path, what, names[i]);
        }
    }
    return 0;
}

static int gguf_check_unique_names(const GGUFFile* gguf, Error* err) {
    size_t count = (size_t)(gguf->n_values > gguf->n_tensors ? gguf->n_values : gguf->n_tensors);
    char** names = mallocCheck(count * sizeof(char*));
    for (uint64_t i = 0; i < gguf->n_values; i++) { names[i] = gguf->values[i].key; }
    int status = gguf_check_unique(gguf, names, (size_t)gguf->n_values, "key", err);
    if (status == 0) {
        for (uint64_t i = 0; i < gguf->n_tensors; i++) { names[i] = gguf->tensors[i].name; }
        status = gguf_check_unique(gguf, names, (size_t)gguf->n_tensors, "tensor name", err);
    }
    free(names);
    return status;
}

static int compare_tensor_offsets(const void* a, const void* b) {
    const GGUFTensor* x = *(const GGUFTensor* const*)a;
    const GGUFTensor* y = *(const GGUFTensor* const*)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

// No two tensors share bytes (a tensor whose offset or size points into another's data would be read as
// weights that are not its own: ggml refuses such files too).
static int gguf_check_disjoint(GGUFFile* gguf, Error* err) {
    GGUFTensor** order = mallocCheck((size_t)gguf->n_tensors * sizeof(GGUFTensor*));
    for (uint64_t i = 0; i < gguf->n_tensors; i++) { order[i] = &gguf->tensors[i]; }
    qsort(order, (size_t)gguf->n_tensors, sizeof(GGUFTensor*), compare_tensor_offsets);
    int status = 0;
    for (uint64_t i = 1; i < gguf->n_tensors && status == 0; i++) {
        const GGUFTensor* before = order[i - 1];
        const GGUFTensor* tensor = order[i];
        if (before->n_bytes > 0 && tensor->offset < before->offset + before->n_bytes) {
            status = error_set(err, "%s: tensor '%.200s' (data offset %llu) overlaps tensor '%.200s' (%zu bytes at data "
                               "offset %llu); expected every tensor's data apart", gguf->path, tensor->name,
                               (unsigned long long)tensor->offset, before->name, before->n_bytes,
                               (unsigned long long)before->offset);
        }
    }
    free(order);
    return status;
}

// The data section starts at the end of the header rounded up to the alignment; every tensor's
// offset must be aligned, its bytes must lie inside the file, and no two tensors may overlap.
static int gguf_place_tensors(GGUFFile* gguf, size_t header_end, Error* err) {
    uint64_t data_offset = (header_end + gguf->alignment - 1) / gguf->alignment * gguf->alignment;
    gguf->data_offset = (size_t)data_offset;
    if (gguf->n_tensors == 0) { return 0; }
    if (data_offset > gguf->size) {
        return error_set(err, "%s: truncated data: the data section starts at byte %llu (header end %zu rounded "
                         "up to alignment %llu) but the file has %zu bytes", gguf->path, (unsigned long long)data_offset,
                         header_end, (unsigned long long)gguf->alignment, gguf->size);
    }
    size_t data_size = gguf->size - gguf->data_offset;
    for (uint64_t i = 0; i < gguf->n_tensors; i++) {
        GGUFTensor* tensor = &gguf->tensors[i];
        if (tensor->offset % gguf->alignment != 0) {
            return error_set(err, "%s: tensor '%.200s' has data offset %llu, not a multiple of the alignment %llu",
                             gguf->path, tensor->name, (unsigned long long)tensor->offset, (unsigned long long)gguf->alignment);
        }
        if (tensor->offset > data_size || tensor->n_bytes > data_size - tensor->offset) {
            return error_set(err, "%s: tensor '%.200s' (%s, %zu bytes at data offset %llu) lies past the end of "
                             "the file: the data section holds %zu bytes",
                             gguf->path, tensor->name, tensor_type_name(tensor->type), tensor->n_bytes,
                             (unsigned long long)tensor->offset, data_size);
        }
        tensor->data = gguf->bytes + gguf->data_offset + tensor->offset;
    }
    return gguf_check_disjoint(gguf, err);
}

// Parses and validates gguf->bytes (already set, with path and size).
static int gguf_parse(GGUFFile* gguf, Error* err) {
    GGUFReader reader = { .bytes = gguf->bytes, .size = gguf->size, .position = 0, .path = gguf->path, .err = err };
    uint64_t n_values, n_tensors;
    if (gguf_read_header(&reader, gguf, &n_values, &n_tensors) != 0) { return -1; }
    if (gguf_read_metadata(&reader, gguf, n_values) != 0) { return -1; }
    if (gguf_read_tensor_infos(&reader, gguf, n_tensors) != 0) { return -1; }
    if (gguf_check_unique_names(gguf, err) != 0) { return -1; }
    if (gguf_read_alignment(gguf, err) != 0) { return -1; }
    return gguf_place_tensors(gguf, reader.position, err);
}

int gguf_open_memory(GGUFFile* gguf, const void* bytes, size_t size, const char* name, Error* err) {
    static const uint8_t empty[1] = {0};
    memset(gguf, 0, sizeof(*gguf));
    gguf->path = gguf_copy_string(name, strlen(name));
    gguf->bytes = bytes != NULL ? (const uint8_t*)bytes : empty;   // never do arithmetic on NULL
    gguf->size = bytes != NULL ? size : 0;
    if (gguf_parse(gguf, err) != 0) {
        gguf_close(gguf);
        return -1;
    }
    return 0;
}

int gguf_open(GGUFFile* gguf, const char* path, Error* err) {
    memset(gguf, 0, sizeof(*gguf));
    size_t size = 0;
    int fd = open_regular_file(path, &size, err); // never blocks on a FIFO
    if (fd < 0) { return -1; }
    if (size == 0) {   // mmap cannot map 0 bytes; the parser reports the empty file
        close(fd);
        return gguf_open_memory(gguf, NULL, 0, path, err);
    }
    void* mapping = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);   // the mapping stays valid without the descriptor
    if (mapping == MAP_FAILED) { return error_set(err, "%s: cannot memory-map: %s", path, strerror(errno)); }
    gguf->path = gguf_copy_string(path, strlen(path));
    gguf->bytes = mapping;
    gguf->size = size;
    gguf->is_mapped = 1;
    if (gguf_parse(gguf, err) != 0) {
        gguf_close(gguf);
        return -1;
    }
    return 0;
}

void gguf_release_pages(const GGUFFile* gguf, const void* data, size_t bytes) {
    if (!gguf->is_mapped) { return; }   // memory the caller owns: never advised away
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)data + page - 1) / page * page, end = ((uintptr_t)data + bytes) / page * page;
    if (end > start) { (void)madvise((void*)start, end - start, MADV_DONTNEED); }   // advice: a failure changes nothing
}

void gguf_close(GGUFFile* gguf) {
    for (uint64_t i = 0; i < gguf->n_values; i++) { free(gguf->values[i].key); }
    for (uint64_t i = 0; i < gguf->n_tensors; i++) { free(gguf->tensors[i].name); }
    free(gguf->values);
    free(gguf->tensors);
    free(gguf->path);
    if (gguf->is_mapped) { munmap((void*)gguf->bytes, gguf->size); }
    memset(gguf, 0, sizeof(*gguf));
}

// ----------------------------------------------------------------------------
// lookups and typed getters

const GGUFValue* gguf_find(const GGUFFile* gguf, const char* key) {
    for (uint64_t i = 0; i < gguf->n_values; i++) {
        if (strcmp(gguf->values[i].key, key) == 0) { return &gguf->values[i]; }
    }
    return NULL;
}

const GGUFTensor* gguf_find_tensor(const GGUFFile* gguf, const char* name) {
    for (uint64_t i = 0; i < gguf->n_tensors; i++) {
        if (strcmp(gguf->tensors[i].name, name) == 0) { return &gguf->tensors[i]; }
    }
    return NULL;
}

static const GGUFValue* gguf_require(const GGUFFile* gguf, const char* key, Error* err) {
    const GGUFValue* value = gguf_find(gguf, key);
    if (value == NULL) { error_set(err, "%s: required key '%s' is missing", gguf->path, key); }
    return value;
}

static int gguf_wrong_type(const GGUFFile* gguf, const GGUFValue* value, const char* expected, Error* err) {
    if (value->type == GGUF_TYPE_ARRAY) {
        return error_set(err, "%s: key '%s' has type array of %s, expected %s",
                         gguf->path, value->key, gguf_type_name(value->array_type), expected);
    }
    return error_set(err, "%s: key '%s' has type %s, expected %s", gguf->path, value->key, gguf_type_name(value->type), expected);
}

int gguf_get_int(const GGUFFile* gguf, const char* key, int64_t* out, Error* err) {
    const GGUFValue* value = gguf_require(gguf, key, err);
    if (value == NULL) { return -1; }
    if (!gguf_type_is_integer(value->type)) { return gguf_wrong_type(gguf, value, "an integer", err); }
    if (value->type == GGUF_TYPE_UINT64 && value->uinteger > (uint64_t)INT64_MAX) {
        return error_set(err, "%s: key '%s' is %llu, too large for int64", gguf->path, key, (unsigned long long)value->uinteger);
    }
    *out = value->integer;
    return 0;
}

int gguf_get_float(const GGUFFile* gguf, const char* key, double* out, Error* err) {
    const GGUFValue* value = gguf_require(gguf, key, err);
    if (value == NULL) { return -1; }
    if (value->type != GGUF_TYPE_FLOAT32 && value->type != GGUF_TYPE_FLOAT64 && !gguf_type_is_integer(value->type)) {
        return gguf_wrong_type(gguf, value, "a number", err);
    }
    *out = value->real;
    return 0;
}

int gguf_get_bool(const GGUFFile* gguf, const char* key, int* out, Error* err) {
    const GGUFValue* value = gguf_require(gguf, key, err);
    if (value == NULL) { return -1; }
    if (value->type != GGUF_TYPE_BOOL) { return gguf_wrong_type(gguf, value, "bool", err); }
    *out = value->uinteger != 0;
    return 0;
}

int gguf_get_string(const GGUFFile* gguf, const char* key, char** out, Error* err) {
    const GGUFValue* value = gguf_require(gguf, key, err);
    if (value == NULL) { return -1; }
    if (value->type != GGUF_TYPE_STRING) { return gguf_wrong_type(gguf, value, "string", err); }
    if (memchr(value->string, 0, (size_t)value->string_length) != NULL) {
        return error_set(err, "%s: key '%s' is a string containing a NUL byte", gguf->path, key);
    }
    *out = gguf_copy_string(value->string, (size_t)value->string_length);
    return 0;
}

void free_string_array(char** strings, uint64_t count) {
    if (strings == NULL) { return; }
    for (uint64_t i = 0; i < count; i++) { free(strings[i]); }
    free(strings);
}

// The array elements were bounds-checked when the file was opened, so walking them here is safe.
int gguf_get_string_array(const GGUFFile* gguf, const char* key, char*** out, uint64_t* count, Error* err) {
    const GGUFValue* value = gguf_require(gguf, key, err);
    if (value == NULL) { return -1; }
    if (value->type != GGUF_TYPE_ARRAY || value->array_type != GGUF_TYPE_STRING) {
        return gguf_wrong_type(gguf, value, "array of string", err);
    }
    char** strings = callocCheck((size_t)value->array_count, sizeof(char*));
    const uint8_t* p = value->array_raw;
    for (uint64_t i = 0; i < value->array_count; i++) {
        size_t length = (size_t)gguf_load_u64(p);
        const char* text = (const char*)p + 8;
        if (memchr(text, 0, length) != NULL) {
            free_string_array(strings, i);
            return error_set(err, "%s: key '%s' element %llu is a string containing a NUL byte",
                             gguf->path, key, (unsigned long long)i);
        }
        strings[i] = gguf_copy_string(text, length);
        p += 8 + length;
    }
    *out = strings;
    *count = value->array_count;
    return 0;
}

int gguf_get_int_array(const GGUFFile* gguf, const char* key, int32_t** out, uint64_t* count, Error* err) {
    const GGUFValue* value = gguf_require(gguf, key, err);
    if (value == NULL) { return -1; }
    if (value->type != GGUF_TYPE_ARRAY || !gguf_type_is_integer(value->array_type)) {
        return gguf_wrong_type(gguf, value, "array of integers", err);
    }
    size_t element_size = gguf_type_size(value->array_type);
    int32_t* integers = mallocCheck((size_t)value->array_count * sizeof(int32_t));
    for (uint64_t i = 0; i < value->array_count; i++) {
        GGUFValue element = {0};
        gguf_decode_scalar(value->array_type, value->array_raw + i * element_size, &element);
        // uint64 is the one type whose value may not fit the signed view
        int fits = value->array_type == GGUF_TYPE_UINT64 ? element.uinteger <= INT32_MAX
                                                        : element.integer >= INT32_MIN && element.integer <= INT32_MAX;
        if (!fits) {
            free(integers);
            return error_set(err, "%s: key '%s' element %llu does not fit in int32", gguf->path, key, (unsigned long long)i);
        }
        integers[i] = (int32_t)element.integer;
    }
    *out = integers;
    *count = value->array_count;
    return 0;
}

void gguf_tensor_to_f32(const GGUFTensor* tensor, float* destination) {
    dequantize_row(tensor->type, tensor->data, destination, tensor->n_elements);
}

int64_t gguf_tensor_first_nonfinite(const GGUFTensor* tensor) {
    const uint8_t* bytes = (const uint8_t*)tensor->data;
    int64_t n = tensor->n_elements;
    switch (tensor->type) {
    case TYPE_F32:
        for (int64_t i = 0; i < n; i++) {
            float x;
            memcpy(&x, bytes + 4 * i, 4);
            if (!isfinite(x)) { return i; }
        }
        return -1;
    case TYPE_F16:
    case TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = tensor_load_u16(bytes + 2 * i);
            if (!isfinite(tensor->type == TYPE_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h))) { return i; }
        }
        return -1;
    case TYPE_Q8_0:
    case TYPE_Q4_0:
    case TYPE_Q4_1: {   // the block's fp16 scale d first, then Q4_1's min m; the quants are integers
        size_t block_bytes = tensor_type_block_bytes(tensor->type);
        int scales = tensor->type == TYPE_Q4_1 ? 2 : 1;
        for (int64_t b = 0; b < n / TENSOR_QK; b++) {
            for (int k = 0; k < scales; k++) {
                if (!isfinite(fp16_to_fp32(tensor_load_u16(bytes + (size_t)b * block_bytes + 2 * k)))) { return b * TENSOR_QK; }
            }
        }
        return -1;
    }
    default:
        return -1;   // integer tensors (index maps) hold no floats
    }
}

// ----------------------------------------------------------------------------
// GGUF writer

// Returns a block of new_size bytes holding the first old_size bytes of block (which it frees).
// Room for element n of a writer's array growing one element at a time: its capacity doubles when n reaches a
// power of two (one element a call once copied the whole array every time).
static void* gguf_grow_for(void* block, size_t n, size_t size) {
    if (n != 0 && (n & (n - 1)) != 0) { return block; }
    void* grown = mallocCheck((n ? 2 * n : 1) * size);
    if (n) { memcpy(grown, block, n * size); }
    free(block);
    return grown;
}

static void* gguf_grow(void* block, size_t old_size, size_t new_size) {
    void* grown = mallocCheck(new_size);
    if (old_size) { memcpy(grown, block, old_size); }
    free(block);
    return grown;
}

typedef struct {
    uint8_t* data;
    size_t size;
    size_t capacity;
} GGUFBuffer;

static void gguf_buffer_append(GGUFBuffer* buffer, const void* bytes, size_t n) {
    if (buffer->size + n > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 256;
        while (capacity < buffer->size + n) { capacity *= 2; }
        buffer->data = gguf_grow(buffer->data, buffer->size, capacity);
        buffer->capacity = capacity;
    }
    if (n) { memcpy(buffer->data + buffer->size, bytes, n); }
    buffer->size += n;
}

static void gguf_buffer_u32(GGUFBuffer* buffer, uint32_t v) {
    uint8_t bytes[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    gguf_buffer_append(buffer, bytes, 4);
}

static void gguf_buffer_u64(GGUFBuffer* buffer, uint64_t v) {
    gguf_buffer_u32(buffer, (uint32_t)v);
    gguf_buffer_u32(buffer, (uint32_t)(v >> 32));
}

static void gguf_buffer_string(GGUFBuffer* buffer, const char* text) {
    size_t length = strlen(text);
    gguf_buffer_u64(buffer, length);
    gguf_buffer_append(buffer, text, length);
}

static void gguf_buffer_pad(GGUFBuffer* buffer, size_t alignment) {
    static const uint8_t zeros[64] = {0};
    while (buffer->size % alignment != 0) {
        size_t n = alignment - buffer->size % alignment;
        gguf_buffer_append(buffer, zeros, n < sizeof(zeros) ? n : sizeof(zeros));
    }
}

typedef struct {
    char* name;
    int type;
    int n_dims;
    int64_t shape[GGUF_MAX_DIMS];
    uint8_t* data;              // already in `type`; or NULL, and then
    const GGUFTensor* source;   // converted to `type` while the file is written (gguf_writer_add_tensor_from)
    size_t n_bytes;
} GGUFWriterTensor;

struct GGUFWriter {
    GGUFBuffer metadata;        // the key/value pairs, serialised as they are added
    uint64_t n_values;
    char** keys;                // (n_values) to refuse duplicates
    GGUFWriterTensor* tensors;
    int n_tensors;
    uint32_t alignment;
    int alignment_is_set;       // write general.alignment
    char error[512];            // the first misuse, reported by gguf_writer_save
};

GGUFWriter* gguf_writer_new(void) {
    GGUFWriter* writer = callocCheck(1, sizeof(GGUFWriter));
    writer->alignment = GGUF_DEFAULT_ALIGNMENT;
    return writer;
}

void gguf_writer_free(GGUFWriter* writer) {
    if (writer == NULL) { return; }
    free(writer->metadata.data);
    free_string_array(writer->keys, writer->n_values);
    for (int i = 0; i < writer->n_tensors; i++) { free(writer->tensors[i].name); free(writer->tensors[i].data); }
    free(writer->tensors);
    free(writer);
}

// Remembers the first misuse; gguf_writer_save then fails with it instead of writing a bad file.
static void gguf_writer_fail(GGUFWriter* writer, const char* message, const char* name) {
    if (writer->error[0] == '\0') { snprintf(writer->error, sizeof(writer->error), "%s '%s'", message, name); }
}

void gguf_writer_set_alignment(GGUFWriter* writer, uint32_t alignment) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        gguf_writer_fail(writer, "alignment must be a nonzero power of two for", "general.alignment");
        return;
    }
    writer->alignment = alignment;
    writer->alignment_is_set = 1;
}

// Starts a key/value pair: the key and the value type. Returns 0 if the key is new.
static int gguf_writer_begin_value(GGUFWriter* writer, const char* key, uint32_t type) {
    for (uint64_t i = 0; i < writer->n_values; i++) {
        if (strcmp(writer->keys[i], key) == 0) { gguf_writer_fail(writer, "duplicate key", key); return -1; }
    }
    if (strcmp(key, "general.alignment") == 0) { gguf_writer_fail(writer, "use gguf_writer_set_alignment for", key); return -1; }
    size_t n = (size_t)writer->n_values;
    writer->keys = gguf_grow_for(writer->keys, n, sizeof(char*));
    writer->keys[n] = gguf_copy_string(key, strlen(key));
    writer->n_values++;
    gguf_buffer_string(&writer->metadata, key);
    gguf_buffer_u32(&writer->metadata, type);
    return 0;
}

// Appends a fixed-size value (host value at `value`) in little-endian order.
static void gguf_buffer_scalar(GGUFBuffer* buffer, uint32_t type, const void* value) {
    size_t size = gguf_type_size(type);
    uint64_t bits = 0;
    if (size == 1) { uint8_t v; memcpy(&v, value, 1); bits = v; }
    if (size == 2) { uint16_t v; memcpy(&v, value, 2); bits = v; }
    if (size == 4) { uint32_t v; memcpy(&v, value, 4); bits = v; }
    if (size == 8) { memcpy(&bits, value, 8); }
    for (size_t i = 0; i < size; i++) {
        uint8_t byte = (uint8_t)(bits >> (8 * i));
        gguf_buffer_append(buffer, &byte, 1);
    }
}

// Any fixed-size scalar type; the public adders are thin wrappers.
static void gguf_writer_add_scalar(GGUFWriter* writer, const char* key, uint32_t type, const void* value) {
    if (gguf_type_size(type) == 0) { gguf_writer_fail(writer, "not a fixed-size scalar type for key", key); return; }
    if (gguf_writer_begin_value(writer, key, type) != 0) { return; }
    gguf_buffer_scalar(&writer->metadata, type, value);
}

void gguf_writer_add_uint32(GGUFWriter* writer, const char* key, uint32_t value) {
    gguf_writer_add_scalar(writer, key, GGUF_TYPE_UINT32, &value);
}
void gguf_writer_add_int32(GGUFWriter* writer, const char* key, int32_t value) {
    gguf_writer_add_scalar(writer, key, GGUF_TYPE_INT32, &value);
}
void gguf_writer_add_uint64(GGUFWriter* writer, const char* key, uint64_t value) {
    gguf_writer_add_scalar(writer, key, GGUF_TYPE_UINT64, &value);
}
void gguf_writer_add_float32(GGUFWriter* writer, const char* key, float value) {
    gguf_writer_add_scalar(writer, key, GGUF_TYPE_FLOAT32, &value);
}
void gguf_writer_add_bool(GGUFWriter* writer, const char* key, int value) {
    uint8_t byte = value != 0;
    gguf_writer_add_scalar(writer, key, GGUF_TYPE_BOOL, &byte);
}

void gguf_writer_add_string(GGUFWriter* writer, const char* key, const char* value) {
    if (gguf_writer_begin_value(writer, key, GGUF_TYPE_STRING) != 0) { return; }
    gguf_buffer_string(&writer->metadata, value);
}

void gguf_writer_add_array(GGUFWriter* writer, const char* key, uint32_t element_type, const void* data, uint64_t count) {
    size_t size = gguf_type_size(element_type);
    if (size == 0) { gguf_writer_fail(writer, "arrays need a fixed-size element type, key", key); return; }
    if (gguf_writer_begin_value(writer, key, GGUF_TYPE_ARRAY) != 0) { return; }
    gguf_buffer_u32(&writer->metadata, element_type);
    gguf_buffer_u64(&writer->metadata, count);
    for (uint64_t i = 0; i < count; i++) {
        gguf_buffer_scalar(&writer->metadata, element_type, (const uint8_t*)data + i * size);
    }
}

void gguf_writer_add_string_array(GGUFWriter* writer, const char* key, const char* const* strings, uint64_t count) {
    if (gguf_writer_begin_value(writer, key, GGUF_TYPE_ARRAY) != 0) { return; }
    gguf_buffer_u32(&writer->metadata, GGUF_TYPE_STRING);
    gguf_buffer_u64(&writer->metadata, count);
    for (uint64_t i = 0; i < count; i++) { gguf_buffer_string(&writer->metadata, strings[i]); }
}

// A new tensor's description, checked (a misuse is remembered and the tensor not added: NULL).
static GGUFWriterTensor* gguf_writer_new_tensor(GGUFWriter* writer, const char* name, int type, int n_dims, const int64_t* shape) {
    if (!tensor_type_supported(type)) { gguf_writer_fail(writer, "unsupported type for tensor", name); return NULL; }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) { gguf_writer_fail(writer, "n_dims must be 1..4 for tensor", name); return NULL; }
    for (int i = 0; i < writer->n_tensors; i++) {
        if (strcmp(writer->tensors[i].name, name) == 0) { gguf_writer_fail(writer, "duplicate tensor", name); return NULL; }
    }
    GGUFWriterTensor tensor = { .type = type, .n_dims = n_dims, .shape = {1, 1, 1, 1} };
    int64_t n_elements = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 1) { gguf_writer_fail(writer, "dimensions must be >= 1 for tensor", name); return NULL; }
        if (n_elements > (INT64_C(1) << 60) / shape[d]) {   // (so its bytes fit in 64 bits; far past any model)
            gguf_writer_fail(writer, "too many elements for tensor", name);
            return NULL;
        }
        tensor.shape[d] = shape[d];
        n_elements *= shape[d];
    }
    if (shape[0] % tensor_type_block_size(type) != 0) {
        gguf_writer_fail(writer, "row length is not a multiple of the block size for tensor", name);
        return NULL;
    }
    tensor.name = gguf_copy_string(name, strlen(name));
    tensor.n_bytes = tensor_bytes(type, n_elements);
    size_t n = (size_t)writer->n_tensors;
    writer->tensors = gguf_grow_for(writer->tensors, n, sizeof(GGUFWriterTensor));
    writer->tensors[writer->n_tensors] = tensor;
    return &writer->tensors[writer->n_tensors++];
}

void gguf_writer_add_tensor(GGUFWriter* writer, const char* name, int type, int n_dims, const int64_t* shape, const float* data) {
    GGUFWriterTensor* tensor = gguf_writer_new_tensor(writer, name, type, n_dims, shape);
    if (tensor == NULL) { return; }
    tensor->data = mallocCheck(tensor->n_bytes);
    quantize_row(type, data, tensor->data, (int64_t)(tensor->shape[0] * tensor->shape[1] * tensor->shape[2] * tensor->shape[3]));
}

void gguf_writer_add_tensor_from(GGUFWriter* writer, const char* name, int type, const GGUFTensor* source) {
    GGUFWriterTensor* tensor = gguf_writer_new_tensor(writer, name, type, source->n_dims, source->shape);
    if (tensor != NULL) { tensor->source = source; }
}

// What comes before the tensor data: header, metadata, tensor descriptions, padding to the alignment.
static void gguf_writer_serialize_head(const GGUFWriter* writer, GGUFBuffer* out) {
    gguf_buffer_append(out, GGUF_MAGIC, 4);
    gguf_buffer_u32(out, 3);
    gguf_buffer_u64(out, (uint64_t)writer->n_tensors);
    gguf_buffer_u64(out, writer->n_values + (writer->alignment_is_set ? 1 : 0));
    if (writer->alignment_is_set) {
        gguf_buffer_string(out, "general.alignment");
        gguf_buffer_u32(out, GGUF_TYPE_UINT32);
        gguf_buffer_u32(out, writer->alignment);
    }
    gguf_buffer_append(out, writer->metadata.data, writer->metadata.size);
    uint64_t offset = 0;
    for (int i = 0; i < writer->n_tensors; i++) {
        const GGUFWriterTensor* tensor = &writer->tensors[i];
        gguf_buffer_string(out, tensor->name);
        gguf_buffer_u32(out, (uint32_t)tensor->n_dims);
        for (int d = 0; d < tensor->n_dims; d++) { gguf_buffer_u64(out, (uint64_t)tensor->shape[d]); }
        gguf_buffer_u32(out, (uint32_t)tensor->type);
        gguf_buffer_u64(out, offset);
        offset += (tensor->n_bytes + writer->alignment - 1) / writer->alignment * writer->alignment;
    }
    gguf_buffer_pad(out, writer->alignment);
}

// A source tensor's data converted to the written type and streamed to the file in chunks of whole rows
// (each type's blocks lie within a row, so a chunk converts to the same bytes as the whole would), so
// that converting a model holds one chunk at a time, never the model.
static void gguf_writer_stream_source(const GGUFWriterTensor* tensor, FILE* stream) {
    enum { CHUNK_VALUES = 1 << 20 };
    const GGUFTensor* source = tensor->source;
    if (tensor->type == source->type) {   // the bytes as they are (a Q4_0 re-quantised could move its scale)
        fwrite(source->data, 1, tensor_bytes(source->type, source->n_elements), stream);
        return;
    }
    int64_t row = source->shape[0], rows = source->n_elements / row;
    int64_t chunk_rows = CHUNK_VALUES / row > 0 ? CHUNK_VALUES / row : 1;
    float* values = mallocCheck((size_t)(chunk_rows * row) * sizeof(float));
    uint8_t* bytes = mallocCheck(tensor_bytes(tensor->type, chunk_rows * row));
    for (int64_t r = 0; r < rows; r += chunk_rows) {
        int64_t n = (rows - r < chunk_rows ? rows - r : chunk_rows) * row;
        dequantize_row(source->type, (const uint8_t*)source->data + tensor_bytes(source->type, r * row), values, n);
        quantize_row(tensor->type, values, bytes, n);
        fwrite(bytes, 1, tensor_bytes(tensor->type, n), stream);   // errors: output_commit reports them
    }
    free(bytes);
    free(values);
}

// The file: the head, then each tensor's data padded to the alignment (as llama.cpp does). Write errors
// are left in the stream's error flag for the caller.
static void gguf_writer_write(const GGUFWriter* writer, FILE* stream) {
    static const uint8_t zeros[64] = {0};
    GGUFBuffer head = {0};
    gguf_writer_serialize_head(writer, &head);
    fwrite(head.data, 1, head.size, stream);
    free(head.data);
    for (int i = 0; i < writer->n_tensors && !ferror(stream); i++) {
        const GGUFWriterTensor* tensor = &writer->tensors[i];
        if (tensor->data) { fwrite(tensor->data, 1, tensor->n_bytes, stream); }
        else { gguf_writer_stream_source(tensor, stream); }
        size_t padding = (writer->alignment - tensor->n_bytes % writer->alignment) % writer->alignment;
        while (padding > 0) {
            size_t n = padding < sizeof(zeros) ? padding : sizeof(zeros);
            fwrite(zeros, 1, n, stream);
            padding -= n;
        }
    }
}

int gguf_writer_save(GGUFWriter* writer, const char* path, Error* err) {
    if (writer->error[0] != '\0') { return error_set(err, "%s: not written: %s", path, writer->error); }
    OutputFile out;
    if (output_open(&out, path, err) != 0) { return -1; }
    gguf_writer_write(writer, out.stream);
    return output_commit(&out, err);   // the old file survives a failure
}

size_t gguf_writer_to_memory(const GGUFWriter* writer, uint8_t** bytes) {
    char* data = NULL;
    size_t size = 0;
    FILE* stream = open_memstream(&data, &size);
    if (stream == NULL) { fprintf(stderr, "error: out of memory writing a GGUF file in memory\n"); exit(1); }
    gguf_writer_write(writer, stream);
    if (ferror(stream) || fclose(stream) != 0) { fprintf(stderr, "error: out of memory writing a GGUF file in memory\n"); exit(1); }
    *bytes = (uint8_t*)data;
    return size;
}

// Copies every metadata value of a file into a writer, except general.alignment (the writer owns it)
// and the keys listed in skip_keys (NULL-terminated, may be NULL). Nested arrays are not copied: no
// model file we read uses them, and the copy reports them as an error rather than dropping them.
int gguf_writer_copy_values(GGUFWriter* writer, const GGUFFile* file, const char* const* skip_keys, Error* err) {
    for (uint64_t i = 0; i < file->n_values; i++) {
        const GGUFValue* v = &file->values[i];
        int skip = strcmp(v->key, "general.alignment") == 0;
        for (int k = 0; skip_keys && skip_keys[k]; k++) { skip |= strcmp(v->key, skip_keys[k]) == 0; }
        if (skip) { continue; }
        if (v->type == GGUF_TYPE_STRING) {
            char* text = NULL;
            if (gguf_get_string(file, v->key, &text, err) != 0) { return -1; }
            gguf_writer_add_string(writer, v->key, text);
            free(text);
        } else if (v->type == GGUF_TYPE_ARRAY && v->array_type == GGUF_TYPE_STRING) {
            char** strings = NULL;
            uint64_t count = 0;
            if (gguf_get_string_array(file, v->key, &strings, &count, err) != 0) { return -1; }
            gguf_writer_add_string_array(writer, v->key, (const char* const*)strings, count);
            free_string_array(strings, count);
        } else if (v->type == GGUF_TYPE_ARRAY && v->array_type == GGUF_TYPE_ARRAY) {
            return error_set(err, "%s: key '%s' is an array of arrays, which the copy does not support", file->path, v->key);
        } else if (v->type == GGUF_TYPE_ARRAY) {
            gguf_writer_add_array(writer, v->key, v->array_type, v->array_raw, v->array_count);
        } else if (v->type == GGUF_TYPE_FLOAT32) {
            float real = (float)v->real;
            gguf_writer_add_scalar(writer, v->key, v->type, &real);
        } else if (v->type == GGUF_TYPE_FLOAT64) {
            gguf_writer_add_scalar(writer, v->key, v->type, &v->real);
        } else {
            gguf_writer_add_scalar(writer, v->key, v->type, &v->uinteger); // little-endian: low bytes first
        }
    }
    return 0;
}
