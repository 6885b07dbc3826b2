/*
json.c: a small strict JSON parser (RFC 8259, UTF-8): one text to a tree of values, every error naming the
file, the line, the column (in bytes, from 1) and what was expected. Used for traffic (JSONL, one value per
line) and for the interop formats (config.json, safetensors headers).
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// a small strict JSON parser: one line of text to a tree of values

typedef struct {
    const char* text;           // one document (not NUL-terminated necessarily): a JSONL line, or a whole file
    size_t length;
    size_t pos;
    const char* path;           // for messages
    int line;                   // of the position: the first line's number, plus the newlines skipped since
    size_t line_start;          // where that line starts in text (columns count from it)
    int depth;
    long values;                // parsed so far
    Error* err;
} JsonParser;

enum { JSON_MAX_DEPTH = 64 };   // nesting limit: deep garbage must not overflow the stack
// values in one document: a line of 100 MB of [0,0,...] would otherwise take gigabytes (about 60 bytes a value)
enum { JSON_MAX_VALUES = 1 << 20 };

void json_free(JsonValue* value) {
    if (value->type == JSON_STRING) { free(value->string); }
    if (value->type == JSON_ARRAY || value->type == JSON_OBJECT) {
        for (int i = 0; i < value->n; i++) {
            json_free(&value->items[i]);
            if (value->keys != NULL) { free(value->keys[i]); }
        }
        free(value->items);
        free(value->keys);
    }
    memset(value, 0, sizeof(*value));
}

// Describes the byte at the parser's position for messages: 'x', end of line, or a hex byte.
static const char* json_found(const JsonParser* p, char* buffer, size_t size) {
    if (p->pos >= p->length) { snprintf(buffer, size, "end of line"); }
    else {
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c >= 0x20 && c < 0x7f) { snprintf(buffer, size, "'%c'", c); }
        else { snprintf(buffer, size, "byte 0x%02x", c); }
    }
    return buffer;
}

static int json_error(JsonParser* p, const char* expected) {
    char found[32];
    return error_set(p->err, "%s:%d:%zu: expected %s, found %s", p->path, p->line, p->pos - p->line_start + 1, expected,
                     json_found(p, found, sizeof(found)));
}

static void json_skip_space(JsonParser* p) {
    while (p->pos < p->length) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') { break; }
        p->pos++;
        if (c == '\n') { p->line++; p->line_start = p->pos; }   // (a newline is only ever whitespace in JSON)
    }
}

static int json_peek(const JsonParser* p) { return p->pos < p->length ? (unsigned char)p->text[p->pos] : -1; }

// A growing byte buffer for decoded strings.
typedef struct { char* data; size_t length, capacity; } JsonBuffer;

static void json_buffer_push(JsonBuffer* b, const char* bytes, size_t n) {
    if (b->length + n + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 16;
        while (b->length + n + 1 > capacity) { capacity *= 2; }
        char* grown = mallocCheck(capacity);
        if (b->data != NULL) { memcpy(grown, b->data, b->length); free(b->data); }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, bytes, n);
    b->length += n;
    b->data[b->length] = '\0';
}

// Appends code point cp (<= 0x10FFFF, not a surrogate) as UTF-8.
static void json_buffer_push_utf8(JsonBuffer* b, uint32_t cp) {
    char out[4];
    size_t n;
    if (cp < 0x80) { out[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    json_buffer_push(b, out, n);
}

static int json_hex4(JsonParser* p, uint32_t* out) {
    uint32_t value = 0;
    for (int i = 0; i < 4; i++) {
        int c = json_peek(p);
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) { return json_error(p, "four hex digits after \\u"); }
        value = value * 16 + (uint32_t)digit;
        p->pos++;
    }
    *out = value;
    return 0;
}

// Parses a string (the parser is at its opening quote) into a malloc'd NUL-terminated UTF-8 copy.
static int json_parse_string(JsonParser* p, char** out) {
    if (json_peek(p) != '"') { return json_error(p, "'\"' (a string)"); }
    p->pos++;
    JsonBuffer b = {NULL, 0, 0};
    json_buffer_push(&b, "", 0);
    for (;;) {
        int c = json_peek(p);
        if (c < 0) { free(b.data); return json_error(p, "'\"' closing the string"); }
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) { free(b.data); return json_error(p, "a character (control bytes must be escaped, e.g. \\n)"); }
        if (c == '\\') {
            p->pos++;
            int e = json_peek(p);
            const char* simple = NULL;
            switch (e) {
                case '"': simple = "\""; break;
                case '\\': simple = "\\"; break;
                case '/': simple = "/"; break;
                case 'b': simple = "\b"; break;
                case 'f': simple = "\f"; break;
                case 'n': simple = "\n"; break;
                case 'r': simple = "\r"; break;
                case 't': simple = "\t"; break;
                case 'u': break;
                default: free(b.data); return json_error(p, "an escape (one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
            }
            p->pos++;
            if (simple != NULL) { json_buffer_push(&b, simple, 1); continue; }
            uint32_t cp;
            if (json_hex4(p, &cp) != 0) { free(b.data); return -1; }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                p->pos -= 6;
                free(b.data);
                return json_error(p, "a high surrogate (\\uD800-\\uDBFF) before a low surrogate");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (json_peek(p) != '\\' || p->pos + 1 >= p->length || p->text[p->pos + 1] != 'u') {
                    free(b.data);
                    return json_error(p, "\\u and a low surrogate (\\uDC00-\\uDFFF) after a high surrogate");
                }
                p->pos += 2;
                uint32_t low;
                if (json_hex4(p, &low) != 0) { free(b.data); return -1; }
                if (low < 0xDC00 || low > 0xDFFF) {
                    p->pos -= 6;
                    free(b.data);
                    return json_error(p, "a low surrogate (\\uDC00-\\uDFFF) after a high surrogate");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            if (cp == 0) {
                p->pos -= 6;
                free(b.data);
                return json_error(p, "a character other than \\u0000 (prompts are C strings)");
            }
            json_buffer_push_utf8(&b, cp);
            continue;
        }
        size_t n = utf8_valid_length((const unsigned char*)p->text + p->pos, p->length - p->pos);
        if (n == 0) { free(b.data); return json_error(p, "valid UTF-8"); }
        json_buffer_push(&b, p->text + p->pos, n);
        p->pos += n;
    }
    *out = b.data;
    return 0;
}

// Number grammar: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?; *integer_literal: neither part given
static int json_parse_number(JsonParser* p, double* out, int* integer_literal) {
    size_t start = p->pos;
    if (json_peek(p) == '-') { p->pos++; }
    int c = json_peek(p);
    if (c == '0') { p->pos++; }
    else if (c >= '1' && c <= '9') { while (json_peek(p) >= '0' && json_peek(p) <= '9') { p->pos++; } }
    else { return json_error(p, "a digit"); }
    *integer_literal = json_peek(p) != '.' && json_peek(p) != 'e' && json_peek(p) != 'E';
    if (json_peek(p) == '.') {
        p->pos++;
        if (!(json_peek(p) >= '0' && json_peek(p) <= '9')) { return json_error(p, "a digit after '.'"); }
        while (json_peek(p) >= '0' && json_peek(p) <= '9') { p->pos++; }
    }
    if (json_peek(p) == 'e' || json_peek(p) == 'E') {
        p->pos++;
        if (json_peek(p) == '+' || json_peek(p) == '-') { p->pos++; }
        if (!(json_peek(p) >= '0' && json_peek(p) <= '9')) { return json_error(p, "a digit in the exponent"); }
        while (json_peek(p) >= '0' && json_peek(p) <= '9') { p->pos++; }
    }
    // the whole literal, however long (1e-000...0005 is 1e-5): strtod needs it terminated
    char small[64];
    size_t n = p->pos - start;
    char* buffer = n < sizeof(small) ? small : mallocCheck(n + 1);
    memcpy(buffer, p->text + start, n);
    buffer[n] = '\0';
    *out = strtod(buffer, NULL);
    // a literal past double's range (1e999) is an error, not an infinity a reader would take as a value
    int status = 0;
    if (!isfinite(*out)) {
        status = error_set(p->err, "%s:%d:%zu: expected a number within double's range (magnitude up to about 1.8e308), "
                           "found %.32s%s", p->path, p->line, start - p->line_start + 1, buffer, n > 32 ? "..." : "");
    }
    if (buffer != small) { free(buffer); }
    return status;
}

static int json_parse_value(JsonParser* p, JsonValue* value);

static int json_parse_literal(JsonParser* p, const char* word, JsonType type, JsonValue* value) {
    size_t n = strlen(word);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) {
        char expected[32];
        snprintf(expected, sizeof(expected), "'%s'", word);
        return json_error(p, expected);
    }
    p->pos += n;
    value->type = type;
    return 0;
}

// Appends one element (and key, for objects) to a container, growing its arrays.
static JsonValue* json_append(JsonValue* container, int* capacity, char* key) {
    if (container->n == *capacity) {
        *capacity = *capacity ? *capacity * 2 : 4;
        JsonValue* items = mallocCheck((size_t)*capacity * sizeof(JsonValue));
        if (container->n > 0) { memcpy(items, container->items, (size_t)container->n * sizeof(JsonValue)); }
        free(container->items);
        container->items = items;
        if (container->type == JSON_OBJECT) {
            char** keys = mallocCheck((size_t)*capacity * sizeof(char*));
            if (container->n > 0) { memcpy(keys, container->keys, (size_t)container->n * sizeof(char*)); }
            free(container->keys);
            container->keys = keys;
        }
    }
    if (container->type == JSON_OBJECT) { container->keys[container->n] = key; }
    JsonValue* item = &container->items[container->n++];
    memset(item, 0, sizeof(*item));
    return item;
}

// An object whose members' names repeat is refused: readers disagree on which value counts (Python's json
// and most others keep the last, a first-match lookup the first; serde refuses), so a file read one way
// here could mean another thing to the program that wrote it. Sorted, so a large object costs n log n.
typedef struct { const char* name; int index; } JsonMember;
static int json_compare_members(const void* a, const void* b) {
    const JsonMember *x = a, *y = b;
    int order = strcmp(x->name, y->name);
    return order != 0 ? order : (x->index > y->index) - (x->index < y->index);
}

static int json_check_unique_names(JsonParser* p, const JsonValue* object) {
    if (object->n < 2) { return 0; }
    JsonMember* members = mallocCheck((size_t)object->n * sizeof(JsonMember));
    for (int i = 0; i < object->n; i++) { members[i] = (JsonMember){object->keys[i], i}; }
    qsort(members, (size_t)object->n, sizeof(JsonMember), json_compare_members);
    int status = 0;
    for (int k = 1; k < object->n && status == 0; k++) {
        if (strcmp(members[k - 1].name, members[k].name) != 0) { continue; }
        const JsonValue *first = &object->items[members[k - 1].index], *again = &object->items[members[k].index];
        char name[96];
        status = error_set(p->err, "%s:%d:%d: member \"%s\" appears twice in one object (its values at line:column %d:%d "
                           "and %d:%d); expected each name once", p->path, again->line, again->column,
                           printable_text(members[k].name, name, sizeof(name)), first->line, first->column, again->line,
                           again->column);
    }
    free(members);
    return status;
}

static int json_parse_container(JsonParser* p, JsonValue* value, int is_object) {
    if (++p->depth > JSON_MAX_DEPTH) { return json_error(p, "at most 64 levels of nesting"); }
    value->type = is_object ? JSON_OBJECT : JSON_ARRAY;
    char close = is_object ? '}' : ']';
    int capacity = 0;
    p->pos++;   // the opening bracket
    json_skip_space(p);
    if (json_peek(p) == close) { p->pos++; p->depth--; return 0; }
    for (;;) {
        char* key = NULL;
        if (is_object) {
            if (json_peek(p) != '"') { return json_error(p, "'\"' starting a member name"); }
            if (json_parse_string(p, &key) != 0) { return -1; }
            json_skip_space(p);
            if (json_peek(p) != ':') { free(key); return json_error(p, "':' after a member name"); }
            p->pos++;
            json_skip_space(p);
        }
        JsonValue* item = json_append(value, &capacity, key);   // owned by value from here: freed with it
        if (json_parse_value(p, item) != 0) { return -1; }
        json_skip_space(p);
        if (json_peek(p) == ',') { p->pos++; json_skip_space(p); continue; }
        if (json_peek(p) == close) { p->pos++; break; }
        return json_error(p, is_object ? "',' or '}' after an object member" : "',' or ']' after an array element");
    }
    p->depth--;
    return is_object ? json_check_unique_names(p, value) : 0;
}

// Parses one value at the parser's position (leading whitespace already skipped). On failure the
// partial tree stays in value and the caller frees it with json_free.
static int json_parse_value(JsonParser* p, JsonValue* value) {
    memset(value, 0, sizeof(*value));
    value->line = p->line;
    value->column = (int)(p->pos - p->line_start) + 1;
    if (++p->values > JSON_MAX_VALUES) { return json_error(p, "at most 1048576 values in one document"); }
    int c = json_peek(p);
    switch (c) {
        case '{': return json_parse_container(p, value, 1);
        case '[': return json_parse_container(p, value, 0);
        case '"': value->type = JSON_STRING; return json_parse_string(p, &value->string);
        case 't': return json_parse_literal(p, "true", JSON_TRUE, value);
        case 'f': return json_parse_literal(p, "false", JSON_FALSE, value);
        case 'n': return json_parse_literal(p, "null", JSON_NULL, value);
        default:
            if (c == '-' || (c >= '0' && c <= '9')) {
                value->type = JSON_NUMBER;
                return json_parse_number(p, &value->number, &value->integer_literal);
            }
            return json_error(p, "a JSON value (object, array, string, number, true, false or null)");
    }
}

// Parses a whole line that must hold exactly one JSON object.
int json_parse_line(const char* text, size_t length, const char* path, int line, JsonValue* out, Error* err) {
    JsonParser p = {text, length, 0, path, line, 0, 0, 0, err};
    memset(out, 0, sizeof(*out));
    json_skip_space(&p);
    if (json_peek(&p) != '{') { return json_error(&p, "'{' (each line is one JSON object)"); }
    if (json_parse_value(&p, out) != 0) { json_free(out); return -1; }
    json_skip_space(&p);
    if (p.pos < p.length) { json_free(out); return json_error(&p, "end of line after the JSON object"); }
    return 0;
}

// The member named key of an object (names are unique: json_check_unique_names), or NULL.
const JsonValue* json_get(const JsonValue* object, const char* key) {
    for (int i = 0; i < object->n; i++) {
        if (strcmp(object->keys[i], key) == 0) { return &object->items[i]; }
    }
    return NULL;
}

const char* json_type_name(JsonType type) {
    static const char* names[] = {"null", "false", "true", "a number", "a string", "an array", "an object"};
    return names[type];
}

// Writes text as a JSON string literal: quotes, backslash escapes, control characters as \u00XX, valid
// UTF-8 as it is, and each byte that is not part of a valid UTF-8 sequence as \ufffd (JSON is UTF-8:
// Python's json refuses the file otherwise).
void json_write_string(FILE* out, const char* text) {
    fputc('"', out);
    size_t length = strlen(text);
    for (size_t i = 0; i < length; ) {
        unsigned char c = (unsigned char)text[i];
        size_t n = utf8_valid_length((const unsigned char*)text + i, length - i);
        if (n == 0) { fputs("\\ufffd", out); i++; continue; }
        if (c == '"' || c == '\\') { fputc('\\', out); fputc(c, out); }
        else if (c < 0x20) { fprintf(out, "\\u%04x", c); }
        else { fwrite(text + i, 1, n, out); }
        i += n;
    }
    fputc('"', out);
}
