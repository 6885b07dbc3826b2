/*
interop/safetensors.c: the safetensors format (Hugging Face), read and written by our own small code.

The format (https://github.com/huggingface/safetensors, "Format"):
  8 bytes      N, the header length, unsigned little-endian
  N bytes      a JSON object: for each tensor  "name": {"dtype": "F32", "shape": [rows, cols],
               "data_offsets": [begin, end]}  and optionally "__metadata__": {string: string};
               the writer pads it with spaces
  the rest     the data section; each tensor's bytes are [begin, end) of it, row-major, little-endian

What the reader checks (the rules of the reference implementation's validation, so a file we accept is
one every other reader accepts, with one leniency: a shape or offset written as a whole number in
fraction or exponent form, 2.0 or 2e1, reads as that integer, where the reference's integer fields refuse it): the header fits in the file and in 100 MB; it is one JSON object; every
tensor has a known dtype, a shape of non-negative integers and two integer offsets with begin <= end;
the byte count of the shape equals end - begin; sorted by begin, the tensors tile the data section
exactly (the first starts at 0, each starts where the previous one ends: no overlap, no gap, nothing
left over); names are unique. Every failure is an Error naming the file and the tensor or the byte
where the header went wrong. The JSON parser is base/json.c's (strict JSON, nesting limit).

  safetensors_open / _open_memory / _close    a validated, memory-mapped file (or a caller's buffer)
  safetensors_find                            a tensor by name (NULL if absent)
  safetensors_tensor_to_f32                   F32 / F16 / BF16 data to fp32
  safetensors_writer_*                        collect tensors, then write the file atomically

Included by aurora.c after traffic.c (one translation unit); interop/eagle3_formats.c uses it.
*/
#include <sys/mman.h>
#include "aurora.h"

// ----------------------------------------------------------------------------
// dtypes: the names the format defines, and their sizes in bytes

typedef struct { const char* name; size_t size; } SafetensorsDtype;
static const SafetensorsDtype SAFETENSORS_DTYPES[] = {
    {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
    {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8},
};
enum { SAFETENSORS_N_DTYPES = sizeof(SAFETENSORS_DTYPES) / sizeof(SAFETENSORS_DTYPES[0]) };
#define SAFETENSORS_MAX_HEADER 100000000ull   // the reference implementation's limit (100 MB)
#define SAFETENSORS_MAX_INTEGER 9007199254740992.0 // 2^53: larger JSON numbers are not exact in a double

static const SafetensorsDtype* safetensors_dtype(const char* name) {
    for (int i = 0; i < SAFETENSORS_N_DTYPES; i++) {
        if (strcmp(SAFETENSORS_DTYPES[i].name, name) == 0) { return &SAFETENSORS_DTYPES[i]; }
    }
    return NULL;
}

// ----------------------------------------------------------------------------
// reading


void safetensors_close(SafetensorsFile* file) {
    for (int i = 0; i < file->n_tensors; i++) { free(file->tensors[i].name); }
    free(file->tensors);
    free(file->path);
    if (file->is_mapped) { munmap((void*)file->bytes, file->size); }
    memset(file, 0, sizeof(*file));
}

// A JSON number that must be an integer in [0, 2^53] (shapes and offsets), written as one: Hugging Face's
// reader (serde, unsigned integers) refuses 4.0 and 1e2, and 1e-400 would read as 0 here.
static int safetensors_json_count(const SafetensorsFile* file, const char* tensor, const char* field,
                                  const JsonValue* value, uint64_t* out, Error* err) {
    if (value->type != JSON_NUMBER || !value->integer_literal || !(value->number >= 0.0) ||
        value->number > SAFETENSORS_MAX_INTEGER || value->number != floor(value->number)) {
        return error_set(err, "%s: tensor '%s': %s holds %s%s, expected a non-negative integer", file->path, tensor,
                         field, json_type_name(value->type),
                         value->type == JSON_NUMBER ? " out of range, not whole or not written as an integer" : "");
    }
    *out = (uint64_t)value->number;
    return 0;
}

// One header member: "name": {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}.
static int safetensors_read_entry(SafetensorsFile* file, SafetensorsTensor* tensor, const char* name,
                                  const JsonValue* entry, Error* err) {
    if (entry->type != JSON_OBJECT) {
        return error_set(err, "%s: tensor '%s' is described by %s, expected an object with dtype, shape and "
                         "data_offsets", file->path, name, json_type_name(entry->type));
    }
    const JsonValue* dtype = json_get(entry, "dtype");
    const JsonValue* shape = json_get(entry, "shape");
    const JsonValue* offsets = json_get(entry, "data_offsets");
    if (dtype == NULL || shape == NULL || offsets == NULL) {
        return error_set(err, "%s: tensor '%s' has no '%s', expected dtype, shape and data_offsets", file->path, name,
                         dtype == NULL ? "dtype" : shape == NULL ? "shape" : "data_offsets");
    }
    if (dtype->type != JSON_STRING || safetensors_dtype(dtype->string) == NULL) {
        return error_set(err, "%s: tensor '%s' has unknown dtype %s%s%s, expected one of BOOL, U8, I8, F8_E5M2, "
                         "F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64", file->path, name,
                         dtype->type == JSON_STRING ? "'" : "", dtype->type == JSON_STRING ? dtype->string
                         : json_type_name(dtype->type), dtype->type == JSON_STRING ? "'" : "");
    }
    const SafetensorsDtype* type = safetensors_dtype(dtype->string);
    tensor->dtype = type->name;
    tensor->dtype_size = type->size;
    if (shape->type != JSON_ARRAY || shape->n > SAFETENSORS_MAX_DIMS) {
        return error_set(err, "%s: tensor '%s' has shape %s%s, expected an array of at most %d sizes", file->path,
                         name, json_type_name(shape->type), shape->type == JSON_ARRAY ? " too long" : "",
                         SAFETENSORS_MAX_DIMS);
    }
    tensor->n_dims = shape->n;
    uint64_t n_elements = 1;
    int overflow = 0;
    for (int d = 0; d < shape->n; d++) {
        uint64_t size;
        if (safetensors_json_count(file, name, "shape", &shape->items[d], &size, err) != 0) { return -1; }
        tensor->shape[d] = (int64_t)size;
        if (size != 0 && n_elements > UINT64_MAX / size) { overflow = 1; }
        n_elements *= size;
    }
    if (offsets->type != JSON_ARRAY || offsets->n != 2) {
        return error_set(err, "%s: tensor '%s' has data_offsets %s, expected [begin, end]", file->path, name,
                         offsets->type == JSON_ARRAY ? "of the wrong length" : json_type_name(offsets->type));
    }
    if (safetensors_json_count(file, name, "data_offsets", &offsets->items[0], &tensor->begin, err) != 0 ||
        safetensors_json_count(file, name, "data_offsets", &offsets->items[1], &tensor->end, err) != 0) {
        return -1;
    }
    if (tensor->end < tensor->begin) {
        return error_set(err, "%s: tensor '%s' has data_offsets [%llu, %llu], expected begin <= end", file->path, name,
                         (unsigned long long)tensor->begin, (unsigned long long)tensor->end);
    }
    if (overflow || n_elements > UINT64_MAX / type->size || n_elements * type->size != tensor->end - tensor->begin) {
        return error_set(err, "%s: tensor '%s' of dtype %s and %d dimensions holds %s%llu bytes by its shape, but its "
                         "data_offsets [%llu, %llu] span %llu bytes; expected them equal", file->path, name,
                         type->name, shape->n, overflow ? "more than 2^64 elements, not " : "",
                         overflow ? 0ull : (unsigned long long)(n_elements * type->size),
                         (unsigned long long)tensor->begin, (unsigned long long)tensor->end,
                         (unsigned long long)(tensor->end - tensor->begin));
    }
    tensor->n_elements = (int64_t)n_elements;
    tensor->n_bytes = (size_t)(tensor->end - tensor->begin);
    return 0;
}

static int safetensors_compare_begin(const void* a, const void* b) {
    const SafetensorsTensor* x = *(SafetensorsTensor* const*)a;
    const SafetensorsTensor* y = *(SafetensorsTensor* const*)b;
    if (x->begin != y->begin) { return x->begin < y->begin ? -1 : 1; }
    return x->end < y->end ? -1 : x->end > y->end;
}

// The tensors tile the data section exactly, in order of their offsets. (Their names are unique: the JSON
// parser refuses a name twice in one object.)
static int safetensors_check_layout(SafetensorsFile* file, uint64_t data_size, Error* err) {
    int n = file->n_tensors;
    SafetensorsTensor** order = mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(SafetensorsTensor*));
    for (int i = 0; i < n; i++) { order[i] = &file->tensors[i]; }
    int status = 0;
    qsort(order, (size_t)n, sizeof(*order), safetensors_compare_begin);
    uint64_t expected = 0;
    for (int i = 0; i < n && status == 0; i++) {
        const SafetensorsTensor* t = order[i];
        if (t->begin < expected) {
            status = error_set(err, "%s: tensor '%s' has data_offsets [%llu, %llu], overlapping tensor '%s' [%llu, %llu]; "
                               "expected disjoint ranges", file->path, t->name, (unsigned long long)t->begin,
                               (unsigned long long)t->end, order[i - 1]->name, (unsigned long long)order[i - 1]->begin,
                               (unsigned long long)order[i - 1]->end);
        } else if (t->begin > expected) {
            status = error_set(err, "%s: tensor '%s' starts at data offset %llu, but the previous tensor ends at %llu; "
                               "expected the tensors to tile the data section without gaps", file->path, t->name,
                               (unsigned long long)t->begin, (unsigned long long)expected);
        } else if (t->end > data_size) {
            status = error_set(err, "%s: tensor '%s' has data_offsets [%llu, %llu], beyond the %llu bytes of data in the "
                               "file (truncated?)", file->path, t->name, (unsigned long long)t->begin,
                               (unsigned long long)t->end, (unsigned long long)data_size);
        }
        expected = t->end;
    }
    if (status == 0 && expected != data_size) {
        status = error_set(err, "%s: the tensors end at data offset %llu but the file holds %llu bytes of data; expected "
                           "no trailing bytes", file->path, (unsigned long long)expected, (unsigned long long)data_size);
    }
    free(order);
    return status;
}

static int safetensors_parse(SafetensorsFile* file, Error* err) {
    if (file->size < 8) {
        return error_set(err, "%s: %zu bytes, too short for a safetensors file (expected an 8-byte header length, "
                         "then a JSON header)", file->path, file->size);
    }
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--) { header_length = header_length << 8 | file->bytes[i]; }
    if (header_length > SAFETENSORS_MAX_HEADER) {
        return error_set(err, "%s: header length %llu is larger than the 100 MB limit (not a safetensors file?)",
                         file->path, (unsigned long long)header_length);
    }
    if (header_length > file->size - 8) {
        return error_set(err, "%s: header length %llu goes beyond the end of the file (%zu bytes; truncated?)",
                         file->path, (unsigned long long)header_length, file->size);
    }
    const char* header = (const char*)file->bytes + 8;
    size_t n = (size_t)header_length;
    // '{' first, no whitespace before it (Hugging Face's reader refuses that: InvalidHeaderStart); padding after
    // the object is allowed, as its writer pads with spaces
    if (n == 0 || header[0] != '{') {
        return error_set(err, "%s: the header does not start with '{', expected one JSON object", file->path);
    }
    char where[600];
    snprintf(where, sizeof(where), "%s: header", file->path);
    JsonValue root;
    if (json_parse_line(header, n, where, 1, &root, err) != 0) { return -1; }
    int status = 0;
    file->tensors = callocCheck((size_t)(root.n > 0 ? root.n : 1), sizeof(SafetensorsTensor));
    for (int i = 0; i < root.n && status == 0; i++) {
        const char* name = root.keys[i];
        const JsonValue* entry = &root.items[i];
        if (strcmp(name, "__metadata__") == 0) {   // free-form strings: checked, not used
            int ok = entry->type == JSON_OBJECT;
            for (int k = 0; ok && k < entry->n; k++) { ok = entry->items[k].type == JSON_STRING; }
            if (!ok) { status = error_set(err, "%s: '__metadata__' is not an object of strings", file->path); }
            continue;
        }
        SafetensorsTensor* tensor = &file->tensors[file->n_tensors];
        tensor->name = mallocCheck(strlen(name) + 1);
        strcpy(tensor->name, name);
        file->n_tensors++;
        status = safetensors_read_entry(file, tensor, name, entry, err);
    }
    json_free(&root);
    if (status != 0) { return -1; }
    uint64_t data_size = file->size - 8 - header_length;
    if (safetensors_check_layout(file, data_size, err) != 0) { return -1; }
    const uint8_t* data = file->bytes + 8 + header_length;
    for (int i = 0; i < file->n_tensors; i++) { file->tensors[i].data = data + file->tensors[i].begin; }
    return 0;
}

int safetensors_open_memory(SafetensorsFile* file, const void* bytes, size_t size, const char* name, Error* err) {
    static const uint8_t empty[1] = {0};
    memset(file, 0, sizeof(*file));
    file->path = mallocCheck(strlen(name) + 1);
    strcpy(file->path, name);
    file->bytes = bytes != NULL ? (const uint8_t*)bytes : empty;
    file->size = bytes != NULL ? size : 0;
    if (safetensors_parse(file, err) != 0) { safetensors_close(file); return -1; }
    return 0;
}

int safetensors_open(SafetensorsFile* file, const char* path, Error* err) {
    memset(file, 0, sizeof(*file));
    size_t size = 0;
    int fd = open_regular_file(path, &size, err);
    if (fd < 0) { return -1; }
    if (size == 0) { close(fd); return safetensors_open_memory(file, NULL, 0, path, err); }
    void* mapping = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (mapping == MAP_FAILED) { return error_set(err, "%s: cannot memory-map: %s", path, strerror(errno)); }
    file->path = mallocCheck(strlen(path) + 1);
    strcpy(file->path, path);
    file->bytes = mapping;
    file->size = size;
    file->is_mapped = 1;
    if (safetensors_parse(file, err) != 0) { safetensors_close(file); return -1; }
    return 0;
}

const SafetensorsTensor* safetensors_find(const SafetensorsFile* file, const char* name) {
    for (int i = 0; i < file->n_tensors; i++) {
        if (strcmp(file->tensors[i].name, name) == 0) { return &file->tensors[i]; }
    }
    return NULL;
}

// F32, F16 or BF16 data to fp32 (bit-exact for F32; F16 and BF16 widen exactly); out NULL: the dtype's check alone.
int safetensors_tensor_to_f32(const SafetensorsFile* file, const SafetensorsTensor* tensor, float* out, Error* err) {
    const uint8_t* p = tensor->data;
    int is_f32 = strcmp(tensor->dtype, "F32") == 0, is_f16 = strcmp(tensor->dtype, "F16") == 0;
    if (!is_f32 && !is_f16 && strcmp(tensor->dtype, "BF16") != 0) {
        return error_set(err, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", file->path, tensor->name,
                         tensor->dtype);
    }
    if (out == NULL) { return 0; }
    if (is_f32) {
        memcpy(out, p, tensor->n_bytes);   // little-endian host (as everywhere in this project)
    } else {
        for (int64_t i = 0; i < tensor->n_elements; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            out[i] = is_f16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
        }
    }
    return 0;
}

// ----------------------------------------------------------------------------
// writing


void safetensors_writer_free(SafetensorsWriter* writer) {
    for (int i = 0; i < writer->n_tensors; i++) { free(writer->tensors[i].name); free(writer->tensors[i].bytes); }
    free(writer->tensors);
    for (int i = 0; i < writer->n_metadata; i++) { free(writer->metadata_keys[i]); free(writer->metadata_values[i]); }
    free(writer->metadata_keys);
    free(writer->metadata_values);
    memset(writer, 0, sizeof(*writer));
}

// Adds a tensor (its bytes copied, already in dtype, little-endian); shape in PyTorch order.
void safetensors_writer_add(SafetensorsWriter* writer, const char* name, const char* dtype, int n_dims,
                            const int64_t* shape, const void* bytes, size_t n_bytes) {
    const SafetensorsDtype* type = safetensors_dtype(dtype);
    uint64_t n_elements = 1;
    int bad_dimension = 0;   // negative, or a product past 2^62 (what no reader would take)
    for (int d = 0; d < n_dims && n_dims <= SAFETENSORS_MAX_DIMS; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && n_elements > (UINT64_C(1) << 62) / (uint64_t)shape[d])) { bad_dimension = 1; break; }
        n_elements *= (uint64_t)shape[d];
    }
    const char* problem = type == NULL ? "unknown dtype" : n_dims < 0 || n_dims > SAFETENSORS_MAX_DIMS ? "bad rank"
                        : bad_dimension ? "a negative dimension, or a shape too large"
                        : strcmp(name, "__metadata__") == 0 ? "the header's reserved name"
                        : n_elements * type->size != n_bytes ? "byte count does not match the shape" : NULL;
    for (int i = 0; problem == NULL && i < writer->n_tensors; i++) {
        if (strcmp(writer->tensors[i].name, name) == 0) { problem = "duplicate name"; }
    }
    if (problem != NULL) {
        if (writer->error[0] == '\0') { snprintf(writer->error, sizeof(writer->error), "tensor '%s': %s", name, problem); }
        return;
    }
    SafetensorsWriterTensor tensor = {0};
    tensor.name = mallocCheck(strlen(name) + 1);
    strcpy(tensor.name, name);
    tensor.dtype = type->name;
    tensor.n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) { tensor.shape[d] = shape[d]; }
    tensor.bytes = mallocCheck(n_bytes);
    if (n_bytes) { memcpy(tensor.bytes, bytes, n_bytes); }
    tensor.n_bytes = n_bytes;
    SafetensorsWriterTensor* grown = mallocCheck((size_t)(writer->n_tensors + 1) * sizeof(*grown));
    if (writer->n_tensors) { memcpy(grown, writer->tensors, (size_t)writer->n_tensors * sizeof(*grown)); }
    free(writer->tensors);
    writer->tensors = grown;
    writer->tensors[writer->n_tensors++] = tensor;
}

void safetensors_writer_add_metadata(SafetensorsWriter* writer, const char* key, const char* value) {
    int n = writer->n_metadata;
    for (int i = 0; i <= n; i++) {   // ("format" is the writer's own: i == n)
        if (strcmp(i < n ? writer->metadata_keys[i] : "format", key) == 0 && writer->error[0] == '\0') {
            snprintf(writer->error, sizeof(writer->error), "metadata '%s': duplicate key", key);
        }
    }
    writer->metadata_keys = realloc(writer->metadata_keys, (size_t)(n + 1) * sizeof(char*));
    writer->metadata_values = realloc(writer->metadata_values, (size_t)(n + 1) * sizeof(char*));
    if (writer->metadata_keys == NULL || writer->metadata_values == NULL) {
        fprintf(stderr, "error: out of memory (safetensors metadata)\n");
        exit(EXIT_FAILURE);
    }
    writer->metadata_keys[n] = string_copy(key);
    writer->metadata_values[n] = string_copy(value);
    writer->n_metadata = n + 1;
}

// The header padded with spaces to a multiple of 8 bytes, so the data section starts aligned; the tensors
// laid out largest element first (in the order added within a size), so each starts at a multiple of its
// element size and a reader may view it in place (dump's U8 masks came before F32 tensors, which then started
// at odd offsets). The reference writer gets the same alignment by sorting on its dtype enum, then the name:
// its offsets differ from ours, which no reader depends on.
// (Every dtype is 1, 2, 4 or 8 bytes, and safetensors_writer_add refuses any other, so each tensor is placed.)
static void safetensors_writer_order(const SafetensorsWriter* writer, int* order) {
    int n = 0;
    for (size_t size = 8; size >= 1; size /= 2) {
        for (int i = 0; i < writer->n_tensors; i++) {
            if (safetensors_dtype(writer->tensors[i].dtype)->size == size) { order[n++] = i; }
        }
    }
}

int safetensors_writer_save(SafetensorsWriter* writer, const char* path, Error* err) {
    if (writer->error[0] != '\0') { return error_set(err, "%s: not written: %s", path, writer->error); }
    int* order = mallocCheck((size_t)(writer->n_tensors > 0 ? writer->n_tensors : 1) * sizeof(int));
    safetensors_writer_order(writer, order);
    char* header = NULL;
    size_t header_length = 0;
    FILE* memory = open_memstream(&header, &header_length);
    if (memory == NULL) { free(order); return error_set(err, "%s: cannot build the header: out of memory", path); }
    fputs("{\"__metadata__\":{\"format\":\"pt\"", memory);
    for (int i = 0; i < writer->n_metadata; i++) {
        fputc(',', memory);
        json_write_string(memory, writer->metadata_keys[i]);
        fputc(':', memory);
        json_write_string(memory, writer->metadata_values[i]);
    }
    fputc('}', memory);
    uint64_t offset = 0;
    for (int i = 0; i < writer->n_tensors; i++) {
        const SafetensorsWriterTensor* t = &writer->tensors[order[i]];
        fputc(',', memory);
        json_write_string(memory, t->name);
        fprintf(memory, ":{\"dtype\":\"%s\",\"shape\":[", t->dtype);
        for (int d = 0; d < t->n_dims; d++) { fprintf(memory, d ? ",%lld" : "%lld", (long long)t->shape[d]); }
        fprintf(memory, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                (unsigned long long)(offset + t->n_bytes));
        offset += t->n_bytes;
    }
    fputc('}', memory);
    while ((ftell(memory)) % 8 != 0) { fputc(' ', memory); }
    int built = !ferror(memory);
    built &= fclose(memory) == 0 && header != NULL;   // (out of memory: a short header, refused here)
    if (!built || header_length > SAFETENSORS_MAX_HEADER) {
        free(header);
        free(order);
        return built ? error_set(err, "%s: not written: a header of %zu bytes, over the format's 100 MB limit", path, header_length)
                     : error_set(err, "%s: cannot build the header: out of memory", path);
    }
    OutputFile out;
    if (output_open(&out, path, err) != 0) { free(header); free(order); return -1; }
    uint8_t length_bytes[8];
    for (int i = 0; i < 8; i++) { length_bytes[i] = (uint8_t)((uint64_t)header_length >> (8 * i)); }
    fwrite(length_bytes, 1, 8, out.stream);
    fwrite(header, 1, header_length, out.stream);
    free(header);
    for (int i = 0; i < writer->n_tensors; i++) {
        const SafetensorsWriterTensor* t = &writer->tensors[order[i]];
        if (t->n_bytes) { fwrite(t->bytes, 1, t->n_bytes, out.stream); }
    }
    free(order);
    return output_commit(&out, err);   // reports any write error above (ferror), keeping the old file
}
