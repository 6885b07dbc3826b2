/*
test_tokenizer.c: tests of tokenizer.c, plus a small driver for tests/oracle_tokenizer.py.

  test_tokenizer [MODEL]                        run the tests (MODEL defaults to the SmolLM2 GGUF;
                                                its checks are skipped with a message if it is absent)
  test_tokenizer --tokenize MODEL [--special]   read text from stdin, print its ids (driver mode)
  test_tokenizer --tokenize-batch MODEL         many texts: records "<special 0|1> <bytes>\n<text>"

Covers: GPT-2 byte mapping and code-point classes, pre-tokenizer splits, round trips on hard strings
(Unicode, whitespace runs, digits, emoji, invalid UTF-8, empty), the tiny tokenizer written by
gguf_writer_add_tiny_tokenizer, special-token parsing, malformed metadata, and (with the model) exact
ids from llama.cpp. The last line printed is "N passed, M failed"; the exit status is the verdict.

Build: make build/test_tokenizer build/test_tokenizer_asan, or by hand:
  gcc -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fsanitize=address,undefined tests/test_tokenizer.c -o build/test_tokenizer_asan -lm
*/
#define TESTING
#include <unistd.h>
#include "../aurora.c"

static int tests_passed = 0;
static int tests_failed = 0;
#define check(condition, ...) do { \
    if (condition) { tests_passed++; } \
    else { tests_failed++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
           fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } \
} while (0)

#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define MAX_IDS (1 << 18)

// ----------------------------------------------------------------------------
// helpers

static int load_tokenizer(const char* path, GGUFFile* gguf, Tokenizer* tokenizer, Error* err) {
    if (gguf_open(gguf, path, err) != 0) { return -1; }
    if (tokenizer_load_gguf(tokenizer, gguf, err) != 0) { gguf_close(gguf); return -1; }
    return 0;
}

// Encodes and decodes; checks the bytes come back exactly. Returns the token count (-1 on failure).
static int check_round_trip(const Tokenizer* tokenizer, const char* what, const char* text, size_t length, int parse_special) {
    static int ids[MAX_IDS];
    Error err = {{0}};
    int n = tokenizer_encode(tokenizer, text, length, parse_special, ids, MAX_IDS, &err);
    check(n >= 0, "%s: encode failed: %s", what, err.message);
    if (n < 0) { return -1; }
    int ids_valid = 1;
    for (int i = 0; i < n; i++) { ids_valid &= ids[i] >= 0 && ids[i] < tokenizer->vocab_size; }
    check(ids_valid, "%s: an id is out of range", what);
    // bytes the vocabulary has no token for are dropped (SmolLM2 lacks 21); all others must come back
    const TokenizerLookup* lookup = (const TokenizerLookup*)tokenizer->token_lookup;
    char* expected = (char*)mallocCheck(length + 1);
    size_t expected_length = 0;
    for (size_t i = 0; i < length; i++) {
        if (lookup->byte_token[(uint8_t)text[i]] >= 0) { expected[expected_length++] = text[i]; }
    }
    size_t decoded_length = 0;
    char* decoded = tokenizer_decode(tokenizer, ids, n, &decoded_length);
    check(decoded_length == expected_length && memcmp(decoded, expected, expected_length) == 0,
          "%s: round trip changed the text (%zu bytes in, %zu expected back, %zu out)", what, length, expected_length, decoded_length);
    free(decoded);
    free(expected);
    return n;
}

static void check_ids(const Tokenizer* tokenizer, const char* text, int parse_special, const int* expected, int n_expected) {
    int ids[256];
    Error err = {{0}};
    int n = tokenizer_encode(tokenizer, text, strlen(text), parse_special, ids, 256, &err);
    int same = n == n_expected;
    for (int i = 0; same && i < n; i++) { same = ids[i] == expected[i]; }
    if (!same) {
        fprintf(stderr, "  ids of \"%s\" (special %d):\n    got     ", text, parse_special);
        for (int i = 0; i < n; i++) { fprintf(stderr, " %d", ids[i]); }
        fprintf(stderr, "\n    expected");
        for (int i = 0; i < n_expected; i++) { fprintf(stderr, " %d", expected[i]); }
        fprintf(stderr, "\n");
    }
    check(same, "ids of \"%s\" differ from llama.cpp's", text);
}

// The hard strings every tokenizer must round-trip (length -1: use strlen).
typedef struct { const char* name; const char* text; int length; } HardString;
static const HardString HARD_STRINGS[] = {
    {"empty", "", 0},
    {"ascii", "Hello, world! The quick brown fox.", -1},
    {"contractions", "I'm you'll they're we've she'd it's don't I'M DON'T '' 's", -1},
    {"accents", "caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 \xc3\x85ngstr\xc3\xb6m stra\xc3\x9f" "e", -1},
    {"cjk", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 \xe4\xb8\xad\xe6\x96\x87", -1},
    {"rtl", "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7", -1},
    {"combining", "e\xcc\x81 a\xcc\x80 n\xcc\x83\xcc\x83\xcc\x83 x\xcc\xb6y", -1},
    {"whitespace runs", "a  b   c\t\t\td\n\n\ne \r\n f   \n\n   ", -1},
    {"unicode spaces", "a\xc2\xa0" "b\xe3\x80\x80" "c\xe2\x80\x83" "d\xc2\x85" "e\xe2\x80\xa8", -1},
    {"only spaces", "     ", -1},
    {"digits", "0 12 345 6789 3.14159 1e-10 0x1F 2024-05-17 1234567890123456789012345678901234567890", -1},
    {"unicode digits", "\xd9\xa3\xd9\xa4 \xe2\x85\xab \xc2\xbd \xc2\xb2", -1},
    {"emoji", "\xf0\x9f\x98\x80\xf0\x9f\x98\x83 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x87\xba\xf0\x9f\x87\xb8", -1},
    {"emoji zwj", "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 \xe2\x9d\xa4\xef\xb8\x8f", -1},
    {"code", "int main(void) {\n    return a[i] * b->c + 0x10; // done\n}\n", -1},
    {"special text", "<|im_start|>user\nHi<|im_end|>\n<|endoftext|><|im_start|", -1},
    {"invalid utf8", "\xff\xfe" "a\x80" "b\xc3" "c\xe2\x82" "d\xf0\x9f\x98" "e\xc0\x80 \xed\xa0\x80 \xf5\x80\x80\x80 \xf8", -1},
    {"lone continuation", "\x80\x81\x82 \xbf", -1},
    {"nul bytes", "a\0b\0\0c", 7},
    {"all bytes", NULL, 256},   // filled in by run_round_trips
};

static void run_round_trips(const Tokenizer* tokenizer, const char* who) {
    char all_bytes[256];
    for (int i = 0; i < 256; i++) { all_bytes[i] = (char)i; }
    for (size_t i = 0; i < sizeof(HARD_STRINGS) / sizeof(HARD_STRINGS[0]); i++) {
        const HardString* s = &HARD_STRINGS[i];
        const char* text = s->text != NULL ? s->text : all_bytes;
        size_t length = s->length >= 0 ? (size_t)s->length : strlen(text);
        char what[128];
        snprintf(what, sizeof(what), "%s: %s", who, s->name);
        check_round_trip(tokenizer, what, text, length, 0);
        check_round_trip(tokenizer, what, text, length, 1);
    }
    // a longer text: every hard string repeated, and every byte pair
    size_t big_length = 2 * 256 * 256;
    char* big = (char*)mallocCheck(big_length);
    for (size_t i = 0; i < big_length; i++) { big[i] = (char)((i & 1) ? (i >> 1) & 0xFF : (i >> 9) & 0xFF); }
    int n = check_round_trip(tokenizer, "all byte pairs", big, big_length, 0);
    check(n > 0, "%s: all byte pairs gave no tokens", who);
    free(big);
    // seeded random mixes of bytes, UTF-8 pieces and special-token text
    static const char* pieces[] = {" ", "  ", "\n", "\t", "'s", "'", "a", "Z", "7", "42", "\xc3\xa9", "\xe4\xb8\xad",
                                   "\xf0\x9f\x98\x80", "\xe2\x80\x8d", "\xcc\x81", "<|im_start|>", "<|im_end|>", "<|", "|>", ".", "!?"};
    uint64_t state = 42;
    char text[512];
    for (int trial = 0; trial < 300; trial++) {
        size_t length = 0;
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int n_parts = (int)(state >> 59) + 1;
        for (int p = 0; p < n_parts; p++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(state >> 33);
            if (r % 3 == 0) { text[length++] = (char)(r >> 8); continue; }   // any byte, often invalid UTF-8
            const char* piece = pieces[(r >> 8) % (sizeof(pieces) / sizeof(pieces[0]))];
            memcpy(text + length, piece, strlen(piece));
            length += strlen(piece);
        }
        check_round_trip(tokenizer, "random mix", text, length, (int)(trial & 1));
    }
}

// ----------------------------------------------------------------------------
// pure parts: byte mapping, classes, pre-tokenizer

static void test_byte_mapping(void) {
    check(utf8_byte_to_codepoint(' ') == 0x120, "space maps to U+0120 (G with dot), got U+%04X", utf8_byte_to_codepoint(' '));
    check(utf8_byte_to_codepoint('\n') == 0x10A, "newline maps to U+010A");
    check(utf8_byte_to_codepoint('a') == 'a', "printable ASCII maps to itself");
    check(utf8_byte_to_codepoint(0xAD) == 0x143, "0xAD (soft hyphen) is the last remapped byte");
    int all_round_trip = 1;
    for (int b = 0; b < 256; b++) { all_round_trip &= utf8_codepoint_to_byte((uint32_t)utf8_byte_to_codepoint(b)) == b; }
    check(all_round_trip, "byte -> codepoint -> byte is the identity");
    check(utf8_codepoint_to_byte(0x20) == -1, "U+0020 is not GPT-2 byte text");
}

static void test_classes(void) {
    check(utf8_char_class(0xE9) == CHAR_LETTER, "e acute is a letter");
    check(utf8_char_class(0x65E5) == CHAR_LETTER, "CJK ideograph is a letter");
    check(utf8_char_class(0x05E9) == CHAR_LETTER, "Hebrew shin is a letter");
    check(utf8_char_class(0x0663) == CHAR_NUMBER, "Arabic-Indic three is a number");
    check(utf8_char_class(0x216B) == CHAR_NUMBER, "Roman numeral twelve is a number (Nl)");
    check(utf8_char_class(0xBD) == CHAR_NUMBER, "one half is a number (No)");
    check(utf8_char_class(0x3000) == CHAR_WHITESPACE, "ideographic space is whitespace");
    check(utf8_char_class(0x85) == CHAR_WHITESPACE, "NEL is whitespace");
    check(utf8_char_class(0x200B) == CHAR_OTHER, "zero-width space is not whitespace (Cf)");
    check(utf8_char_class(0x1C) == CHAR_OTHER, "U+001C is not whitespace (unlike Python's isspace)");
    check(utf8_char_class(0x301) == CHAR_OTHER, "combining acute is other (Mn)");
    check(utf8_char_class(0x1F600) == CHAR_OTHER, "emoji is other");
    check(utf8_char_class(0x110000) == CHAR_OTHER, "beyond U+10FFFF is other");
    uint32_t cp;
    check(utf8_decode_lenient((const uint8_t*)"\xc3\xa9", 2, 0, &cp) == 2 && cp == 0xE9, "decode e acute");
    check(utf8_decode_lenient((const uint8_t*)"\xc3", 1, 0, &cp) == 1 && cp == 0xFFFD, "truncated sequence is one U+FFFD");
    check(utf8_decode_lenient((const uint8_t*)"\xc0\x80", 2, 0, &cp) == 2 && cp == 0, "overlong NUL decodes leniently (llama.cpp)");
}

// Splits text with a pre-tokenizer and joins the pieces with '|'.
static void split_to_string(int pre_tokenizer, const char* text, char* out, size_t out_size) {
    TokenizerChar* chars;
    size_t n = tokenizer_decode_chars(text, strlen(text), &chars);
    TokenizerPieces pieces = {0};
    tokenizer_pretokenize(pre_tokenizer, chars, n, &pieces);
    size_t at = 0, start = 0;
    out[0] = '\0';
    for (size_t p = 0; p < pieces.count; p++) {
        size_t begin = chars[start].start, end = chars[pieces.ends[p] - 1].start + (size_t)chars[pieces.ends[p] - 1].length;
        at += (size_t)snprintf(out + at, out_size - at, "%s%.*s", p ? "|" : "", (int)(end - begin), text + begin);
        start = pieces.ends[p];
    }
    free(chars); free(pieces.ends);
}

static void test_pretokenizer(void) {
    static const struct { int pre; const char* text; const char* pieces; } cases[] = {
        {PRE_TOKENIZER_GPT2, "Hello world 123", "Hello| world| 123"},
        {PRE_TOKENIZER_SMOLLM, "Hello world 123", "Hello| world| |1|2|3"},
        {PRE_TOKENIZER_GPT2, "a  b", "a| | b"},
        {PRE_TOKENIZER_GPT2, "a  \n", "a|  \n"},
        {PRE_TOKENIZER_GPT2, "I'm they're ok'd 'x", "I|'m| they|'re| ok|'d| '|x"},
        {PRE_TOKENIZER_GPT2, "x+=1;  // hi!!", "x|+=|1|;| | //| hi|!!"},
        {PRE_TOKENIZER_SMOLLM, "a  1", "a|  |1"},
        {PRE_TOKENIZER_SMOLLM, "v2.0", "v|2|.|0"},
        {PRE_TOKENIZER_GPT2, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", "caf\xc3\xa9| \xe6\x97\xa5\xe6\x9c\xac"},
        {PRE_TOKENIZER_GPT2, "\xff\xfe" "ab", "\xff\xfe|ab"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[256];
        split_to_string(cases[i].pre, cases[i].text, got, sizeof(got));
        check(strcmp(got, cases[i].pieces) == 0, "pre-tokenize \"%s\": got \"%s\", expected \"%s\"", cases[i].text, got, cases[i].pieces);
    }
}

static void test_chat_template(void) {
    char prompt[512];
    snprintf(prompt, sizeof(prompt), "%sHi!%s", CHAT_TEMPLATE_HEAD, CHAT_TEMPLATE_TAIL);
    const char* expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                           "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n";
    check(strcmp(prompt, expected) == 0, "chat template: got \"%s\"", prompt);
}

// ----------------------------------------------------------------------------
// the tiny tokenizer, through a real GGUF file

static void temp_path(char* out, size_t size, const char* name) {
    snprintf(out, size, "/tmp/aurora_test_tokenizer_%d_%s.gguf", (int)getpid(), name);
}

static void test_tiny_tokenizer(void) {
    static const int sizes[] = {259, 300, 512, 4096};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int V = sizes[s];
        char path[128];
        temp_path(path, sizeof(path), "tiny");
        GGUFWriter* writer = gguf_writer_new();
        gguf_writer_add_string(writer, "general.architecture", "llama");
        gguf_writer_add_tiny_tokenizer(writer, V);
        Error err = {{0}};
        check(gguf_writer_save(writer, path, &err) == 0, "tiny V=%d: save: %s", V, err.message);
        gguf_writer_free(writer);
        GGUFFile gguf;
        Tokenizer tokenizer;
        if (load_tokenizer(path, &gguf, &tokenizer, &err) != 0) {
            check(0, "tiny V=%d: load: %s", V, err.message);
            unlink(path);
            continue;
        }
        check(tokenizer.vocab_size == V, "tiny: vocab_size %d, expected %d", tokenizer.vocab_size, V);
        check(tokenizer.bos_id == 1 && tokenizer.eos_id == 2 && tokenizer.add_bos == 0, "tiny: bos/eos/add_bos");
        check(tokenizer.token_types[0] == TOKEN_CONTROL && tokenizer.token_types[3] == TOKEN_NORMAL, "tiny: token types");
        int bytes_ok = 1;
        for (int b = 0; b < 256; b++) {
            int length;
            const char* bytes = tokenizer_token_bytes(&tokenizer, 3 + b, &length);
            bytes_ok &= length == 1 && (uint8_t)bytes[0] == b;
        }
        check(bytes_ok, "tiny: token 3 + b is the byte b");
        char who[32];
        snprintf(who, sizeof(who), "tiny V=%d", V);
        run_round_trips(&tokenizer, who);

        // merges compress text they were trained on; with V = 259 every byte is its own token
        const char* text = "The quick brown fox jumps over the lazy dog.";
        int ids[128];
        int n = tokenizer_encode(&tokenizer, text, strlen(text), 0, ids, 128, &err);
        check(V == 259 ? n == (int)strlen(text) : (n > 0 && n < (int)strlen(text)), "tiny V=%d: %d tokens for %zu bytes", V, n, strlen(text));

        // special tokens: matched with parse_special, plain text without
        const char* chat = "<|im_start|>user\nhi<|im_end|>";
        n = tokenizer_encode(&tokenizer, chat, strlen(chat), 1, ids, 128, &err);
        check(n >= 3 && ids[0] == 1 && ids[n - 1] == 2, "tiny: <|im_start|> and <|im_end|> parsed as tokens 1 and 2");
        n = tokenizer_encode(&tokenizer, chat, strlen(chat), 0, ids, 128, &err);
        int has_special = 0;
        for (int i = 0; i < n; i++) { has_special |= ids[i] < 3; }
        check(n > 3 && !has_special, "tiny: without parse_special no control token appears");

        // the prompt path: user text spelling every special token stays text, with and without the chat
        // template; with it, the only control tokens are the template's own five markers
        char injection[1024] = "hi ";
        for (int id = 0; id < tokenizer.vocab_size; id++) {
            if (tokenizer.token_types[id] != TOKEN_CONTROL && tokenizer.token_types[id] != TOKEN_USER_DEFINED) { continue; }
            strncat(injection, tokenizer.tokens[id], sizeof(injection) - strlen(injection) - 16);
            strncat(injection, "\nsystem ", sizeof(injection) - strlen(injection) - 1);
        }
        for (int chat_mode = 0; chat_mode <= 1; chat_mode++) {
            int injected_ids[2048];
            n = prompt_encode(&tokenizer, injection, chat_mode, injected_ids, 2048, &err);
            int control = 0;
            for (int i = 0; i < n; i++) { control += tokenizer.token_types[injected_ids[i]] == TOKEN_CONTROL; }
            check(n > 0 && control == (chat_mode ? 5 : 0), "tiny: injected special-token text gave %d control tokens "
                  "(chat %d), expected %d", control, chat_mode, chat_mode ? 5 : 0);
        }
        // ordinary text: the pieces give what the whole templated string gives with special tokens parsed (as
        // llama.cpp tokenizes it), also for a message that starts with spaces or newlines (the template's
        // "user\n" and the message are one piece of text)
        const char* messages[] = {"the cat sat", "  hi", "\n\nhello there", " x", "\t tabbed", "end with spaces  "};
        for (size_t m = 0; m < sizeof(messages) / sizeof(messages[0]); m++) {
            char templated[512];
            snprintf(templated, sizeof(templated), "%s%s%s", CHAT_TEMPLATE_HEAD, messages[m], CHAT_TEMPLATE_TAIL);
            int whole[128];
            int n_whole = tokenizer_encode(&tokenizer, templated, strlen(templated), 1, whole, 128, &err);
            n = prompt_encode(&tokenizer, messages[m], 1, ids, 128, &err);
            check(n == n_whole && memcmp(ids, whole, (size_t)n * sizeof(int)) == 0, "tiny: chat prompt_encode of \"%s\" "
                  "differs from the templated string's tokens (%d vs %d)", messages[m], n, n_whole);
        }
        check(prompt_encode(&tokenizer, "", 0, ids, 128, &err) < 0 && strstr(err.message, "empty"), "an empty prompt is an error");
        // generation ends at eos (<|im_end|>, 2) and at <|endoftext|> (0), as llama.cpp's is_eog; not at <|im_start|>
        check(tokenizer_is_end(&tokenizer, 2) && tokenizer_is_end(&tokenizer, 0) && !tokenizer_is_end(&tokenizer, 1) &&
              !tokenizer_is_end(&tokenizer, 100) && !tokenizer_is_end(&tokenizer, -1), "tiny: the end-of-generation tokens are 0 and 2");
        check(prompt_encode(&tokenizer, "the cat sat on the mat", 0, ids, 3, &err) < 0 && strstr(err.message, "does not fit in 3 tokens"),
              "a prompt over max_ids is an error");
        // a vocabulary without the template's control tokens: chat is refused, naming the token (here
        // <|im_end|> demoted to an ordinary token, as a model with another template would have it spelled)
        check(prompt_chat_check(&tokenizer, &err) == 0, "tiny: the ChatML control tokens are found");
        tokenizer.token_types[2] = TOKEN_NORMAL;
        n = prompt_encode(&tokenizer, "the cat sat", 1, ids, 128, &err);
        check(n == PROMPT_NO_TEMPLATE && strstr(err.message, "<|im_end|>") && strstr(err.message, "ChatML"),
              "tiny: chat without <|im_end|> as a control token gave %d (%s)", n, n < 0 ? err.message : "");
        check(prompt_encode(&tokenizer, "the cat sat", 0, ids, 128, &err) > 0, "tiny: plain text still encodes");
        Traffic chat_traffic;
        // (a blank line before the chat turn: the message names the file and its line, 3, not its place among
        // the requests, 2, which --order and --domain change)
        const char* jsonl = "{\"prompt\": \"plain\"}\n\n{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}\n";
        check(traffic_parse(&chat_traffic, jsonl, strlen(jsonl), "chat.jsonl", &err) == 0, "tiny: chat traffic parses (%s)", err.message);
        check(traffic_chat_check(&chat_traffic, &tokenizer, &err) != 0 && strstr(err.message, "chat.jsonl:3: a chat turn") &&
              strstr(err.message, "<|im_end|>"), "tiny: traffic with a chat turn is refused up front, naming its line (%s)", err.message);
        chat_traffic.n_requests = 1;   // the plain request alone
        check(traffic_chat_check(&chat_traffic, &tokenizer, &err) == 0, "tiny: plain traffic needs no chat template");
        chat_traffic.n_requests = 2;
        traffic_free(&chat_traffic);
        tokenizer.token_types[2] = TOKEN_CONTROL;
        tokenizer_free(&tokenizer);
        gguf_close(&gguf);
        unlink(path);
    }
}

// ----------------------------------------------------------------------------
// a vocabulary crafted against a fixed hash: its texts all share one slot of an unkeyed FNV-1a table, which
// would make its load quadratic; the keyed hash (tokenizer.c) spreads them like any others

static uint64_t unkeyed_fnv1a(const char* text) {
    uint64_t hash = 1469598103934665603ull;
    for (; *text; text++) { hash = (hash ^ (uint8_t)*text) * 1099511628211ull; }
    return hash;
}

static void test_crafted_collisions(void) {
    enum { N_CRAFTED = 3000 };
    int V = 2 + 256 + N_CRAFTED;
    uint64_t mask = tokenizer_table_capacity((uint64_t)V) - 1;
    const char** tokens = (const char**)mallocCheck((size_t)V * sizeof(char*));
    int32_t* types = (int32_t*)mallocCheck((size_t)V * sizeof(int32_t));
    char (*texts)[16] = mallocCheck((size_t)(256 + N_CRAFTED) * sizeof(*texts));
    int n = 0;
    tokens[n] = "<|endoftext|>"; types[n++] = TOKEN_CONTROL;
    tokens[n] = "<|im_start|>"; types[n++] = TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        memset(texts[b], 0, sizeof(texts[b]));
        utf8_encode((uint32_t)utf8_byte_to_codepoint(b), texts[b]);
        tokens[n] = texts[b]; types[n++] = TOKEN_NORMAL;
    }
    // each text: a distinct 4-letter stem, then the first 4-letter tail that puts it in slot 0 of the
    // unkeyed table (about mask + 1 tries each)
    int on_slot_zero = 0;
    for (int i = 0; i < N_CRAFTED; i++) {
        char* text = texts[256 + i];
        int stem = i;
        for (int j = 0; j < 4; j++) { text[j] = (char)('a' + stem % 26); stem /= 26; }
        text[8] = '\0';
        for (int tail = 0; tail < 26 * 26 * 26 * 26; tail++) {
            int t = tail;
            for (int j = 4; j < 8; j++) { text[j] = (char)('a' + t % 26); t /= 26; }
            if ((unkeyed_fnv1a(text) & mask) == 0) { break; }
        }
        on_slot_zero += (unkeyed_fnv1a(text) & mask) == 0;
        tokens[n] = text; types[n++] = TOKEN_NORMAL;
    }
    // the negative control: the input is what it claims, one slot for all under the unkeyed hash, so a
    // table under it would probe 1 + 2 + ... + N_CRAFTED slots to load
    check(on_slot_zero == N_CRAFTED, "crafted vocabulary: %d of %d texts in slot 0 of the unkeyed table", on_slot_zero, N_CRAFTED);

    char path[128];
    temp_path(path, sizeof(path), "crafted");
    GGUFWriter* writer = gguf_writer_new();
    const char* merges[1] = {"h e"};
    gguf_writer_add_string(writer, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_string(writer, "tokenizer.ggml.pre", "smollm");
    tokens[n - 1] = "he";   // the merge's result (a crafted text less)
    gguf_writer_add_string_array(writer, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    gguf_writer_add_array(writer, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    gguf_writer_add_string_array(writer, "tokenizer.ggml.merges", merges, 1);
    gguf_writer_add_uint32(writer, "tokenizer.ggml.bos_token_id", 1);
    Error err = {{0}};
    if (gguf_writer_save(writer, path, &err) != 0) { fprintf(stderr, "test bug: %s\n", err.message); exit(2); }
    gguf_writer_free(writer);

    GGUFFile gguf[2];
    Tokenizer tokenizer[2];
    for (int load = 0; load < 2; load++) {
        if (load_tokenizer(path, &gguf[load], &tokenizer[load], &err) != 0) {
            check(0, "crafted vocabulary: load: %s", err.message);
            if (load == 1) { tokenizer_free(&tokenizer[0]); gguf_close(&gguf[0]); }
            unlink(path); free(texts); free(types); free(tokens);
            return;
        }
    }
    // the longest probe: how far past its own slot an entry sits (a load walks that far for it)
    const TokenizerLookup* lookup = (const TokenizerLookup*)tokenizer[0].token_lookup;
    uint64_t longest = 0;
    for (uint64_t slot = 0; slot < lookup->capacity; slot++) {
        int id = lookup->slots[slot];
        if (id < 0) { continue; }
        uint64_t home = tokenizer_hash_bytes(lookup->seed, tokenizer[0].tokens[id], (size_t)lookup->token_length[id]) & mask;
        uint64_t distance = (slot - home) & mask;
        if (distance > longest) { longest = distance; }
    }
    check(lookup->capacity == mask + 1, "crafted vocabulary: capacity %llu, expected %llu",
          (unsigned long long)lookup->capacity, (unsigned long long)(mask + 1));
    check(longest < 64, "crafted vocabulary: an entry sits %llu slots past its own (expected a few, as for any "
          "vocabulary at most half full)", (unsigned long long)longest);
    check(lookup->seed != ((const TokenizerLookup*)tokenizer[1].token_lookup)->seed,
          "crafted vocabulary: two loads drew the same hash key");
    int found = 0;
    for (int id = 0; id < n; id++) {
        found += tokenizer_lookup(&tokenizer[1], tokens[id], strlen(tokens[id])) == id;
    }
    check(found == n, "crafted vocabulary: %d of %d texts found under their ids", found, n);
    int ids[4];
    int n_ids = tokenizer_encode(&tokenizer[1], "he", 2, 0, ids, 4, &err);
    check(n_ids == 1 && ids[0] == n - 1, "crafted vocabulary: \"he\" encodes to %d ids (%d), expected [%d]", n_ids,
          n_ids > 0 ? ids[0] : -1, n - 1);
    for (int load = 0; load < 2; load++) { tokenizer_free(&tokenizer[load]); gguf_close(&gguf[load]); }
    unlink(path);
    free(texts);
    free(types);
    free(tokens);
}

// ----------------------------------------------------------------------------
// control-looking tokens: a file that marks end and fill-in-the-middle tokens user-defined (llama.cpp makes
// them control tokens at load, so a user's text spelling them stays text); a genuine user-defined token is
// still matched in plain text

static void test_control_looking(void) {
    int V = 7 + 256;
    const char** tokens = (const char**)mallocCheck((size_t)V * sizeof(char*));
    int32_t* types = (int32_t*)mallocCheck((size_t)V * sizeof(int32_t));
    char (*bytes)[8] = mallocCheck(256 * sizeof(*bytes));
    int n = 0;
    tokens[n] = "<|im_start|>"; types[n++] = TOKEN_CONTROL;                              // 0
    tokens[n] = "<|im_end|>"; types[n++] = TOKEN_USER_DEFINED;                           // 1: an end text
    tokens[n] = "<|endoftext|>"; types[n++] = TOKEN_USER_DEFINED;                        // 2: an end text
    tokens[n] = "<|fim_prefix|>"; types[n++] = TOKEN_USER_DEFINED;                       // 3: FIM, no key
    tokens[n] = "<|fim_suffix|>"; types[n++] = TOKEN_USER_DEFINED;                       // 4: FIM, its key names 4
    tokens[n] = "<tag>"; types[n++] = TOKEN_USER_DEFINED;                                // 5: user-defined
    tokens[n] = "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence" "\xef\xbd\x9c>";            // 6: DeepSeek's end
    types[n++] = TOKEN_USER_DEFINED;
    for (int b = 0; b < 256; b++) {
        memset(bytes[b], 0, sizeof(bytes[b]));
        utf8_encode((uint32_t)utf8_byte_to_codepoint(b), bytes[b]);
        tokens[n] = bytes[b]; types[n++] = TOKEN_NORMAL;
    }
    char path[128];
    temp_path(path, sizeof(path), "control-looking");
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_string(writer, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_string(writer, "tokenizer.ggml.pre", "smollm");
    gguf_writer_add_string_array(writer, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    gguf_writer_add_array(writer, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    gguf_writer_add_string_array(writer, "tokenizer.ggml.merges", NULL, 0);
    gguf_writer_add_uint32(writer, "tokenizer.ggml.fim_suf_token_id", 4);   // (named by the file: as it says)
    Error err = {{0}};
    if (gguf_writer_save(writer, path, &err) != 0) { fprintf(stderr, "test bug: %s\n", err.message); exit(2); }
    gguf_writer_free(writer);
    GGUFFile gguf;
    Tokenizer tokenizer;
    if (load_tokenizer(path, &gguf, &tokenizer, &err) != 0) {
        check(0, "control-looking: load: %s", err.message);
    } else {
        int expected[7] = {TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_USER_DEFINED,
                           TOKEN_CONTROL};
        for (int id = 0; id < 7; id++) {
            check(tokenizer.token_types[id] == expected[id], "control-looking: %s has type %d, expected %d", tokens[id],
                  tokenizer.token_types[id], expected[id]);
        }
        const char* text = "a<|endoftext|>b<|im_end|>c<|fim_prefix|>d<|fim_suffix|>e<tag>f";
        int ids[128], seen[6] = {0};
        int n_ids = tokenizer_encode(&tokenizer, text, strlen(text), 0, ids, 128, &err);
        check(n_ids > 0, "control-looking: encode: %s", err.message);
        for (int i = 0; i < n_ids; i++) { if (ids[i] >= 0 && ids[i] < 6) { seen[ids[i]]++; } }
        check(seen[0] + seen[1] + seen[2] + seen[3] == 0, "control-looking: plain text became an end or FIM token "
              "(<|im_end|> %d, <|endoftext|> %d, <|fim_prefix|> %d times)", seen[1], seen[2], seen[3]);
        check(seen[4] == 1 && seen[5] == 1, "control-looking: the user-defined tokens matched %d and %d times in plain "
              "text, expected once each", seen[4], seen[5]);
        n_ids = tokenizer_encode(&tokenizer, text, strlen(text), 1, ids, 128, &err);
        int specials = 0;
        for (int i = 0; i < n_ids; i++) { specials += ids[i] >= 0 && ids[i] < 6; }
        check(specials == 5, "control-looking: with special parsing %d special tokens, expected 5", specials);
        check(tokenizer_is_end(&tokenizer, 2) && tokenizer_is_end(&tokenizer, 1) && tokenizer_is_end(&tokenizer, 6),
              "control-looking: the end tokens");
        check(prompt_chat_check(&tokenizer, &err) == 0, "control-looking: ChatML refused: %s", err.message);
        tokenizer_free(&tokenizer);
        gguf_close(&gguf);
    }
    unlink(path);
    free(bytes);
    free(types);
    free(tokens);
}

// ----------------------------------------------------------------------------
// malformed metadata: each case must fail to load with a message naming the problem

enum { BAD_NONE, BAD_NO_TOKENS, BAD_MERGE_SPACES, BAD_MERGE_UNKNOWN, BAD_MERGE_RESULT, BAD_PRE, BAD_MODEL,
       BAD_TYPE_COUNT, BAD_TYPE_VALUE, BAD_BOS, BAD_NO_BYTE, BAD_DUPLICATE, BAD_NO_MODEL, BAD_MERGE_CONTROL,
       BAD_MERGE_UNKNOWN_TYPE, BAD_BYTE_UNKNOWN, BAD_PRE_ESCAPE };

// A small valid vocabulary (control, 256 bytes, "Ġt", "he") with one defect.
static void write_vocab(const char* path, int defect) {
    GGUFWriter* writer = gguf_writer_new();
    const char* tokens[262];
    int32_t types[262];
    char byte_text[256][4] = {{0}};
    int n = 0;
    tokens[n] = "<|endoftext|>"; types[n++] = TOKEN_CONTROL;
    tokens[n] = "<|im_start|>"; types[n++] = TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        if (defect == BAD_NO_BYTE && b == 'q') { continue; }
        utf8_encode((uint32_t)utf8_byte_to_codepoint(b), byte_text[b]);
        tokens[n] = byte_text[b]; types[n++] = TOKEN_NORMAL;
    }
    tokens[n] = "\xc4\xa0t"; types[n++] = TOKEN_NORMAL;
    tokens[n] = defect == BAD_DUPLICATE ? "a" : "he";
    types[n++] = defect == BAD_MERGE_CONTROL ? TOKEN_CONTROL : TOKEN_NORMAL;   // made by the merge "h e"
    if (defect == BAD_MERGE_UNKNOWN_TYPE) { types[2 + 'h'] = TOKEN_UNKNOWN; }  // an operand of "h e"
    if (defect == BAD_BYTE_UNKNOWN) { types[2 + 'x'] = TOKEN_UNKNOWN; }      // in no merge
    const char* merges[2] = {"\xc4\xa0 t", "h e"};
    if (defect == BAD_MERGE_SPACES) { merges[1] = "h e x"; }
    if (defect == BAD_MERGE_UNKNOWN) { merges[1] = "h \xe2\x82\xac\xe2\x82\xac"; }
    if (defect == BAD_MERGE_RESULT) { merges[1] = "h a"; }
    if (defect != BAD_NO_MODEL) { gguf_writer_add_string(writer, "tokenizer.ggml.model", defect == BAD_MODEL ? "llama" : "gpt2"); }
    gguf_writer_add_string(writer, "tokenizer.ggml.pre", defect == BAD_PRE ? "llama-bpe"
                                                          : defect == BAD_PRE_ESCAPE ? "\x1b]0;owned\x07\xc2\x9b" "2J" : "smollm");
    if (defect != BAD_NO_TOKENS) { gguf_writer_add_string_array(writer, "tokenizer.ggml.tokens", tokens, (uint64_t)n); }
    if (defect == BAD_TYPE_VALUE) { types[5] = 9; }
    gguf_writer_add_array(writer, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)(defect == BAD_TYPE_COUNT ? n - 1 : n));
    gguf_writer_add_string_array(writer, "tokenizer.ggml.merges", merges, 2);
    gguf_writer_add_uint32(writer, "tokenizer.ggml.bos_token_id", defect == BAD_BOS ? 100000 : 1);
    Error err = {{0}};
    if (gguf_writer_save(writer, path, &err) != 0) { fprintf(stderr, "test bug: %s\n", err.message); exit(2); }
    gguf_writer_free(writer);
}

static void test_malformed(void) {
    static const struct { int defect; const char* name; const char* message_part; } cases[] = {
        {BAD_NO_TOKENS, "missing tokens", "tokenizer.ggml.tokens"},
        {BAD_MERGE_SPACES, "merge with two spaces", "tokenizer.ggml.merges[1]"},
        {BAD_MERGE_UNKNOWN, "merge of an unknown token", "is not a token"},
        {BAD_MERGE_RESULT, "merge whose result is not a token", "not in the vocabulary"},
        {BAD_PRE, "unknown pre-tokenizer", "llama-bpe"},
        // a file's text in a message: its control bytes escaped (a terminal escape sequence must not reach stderr)
        {BAD_PRE_ESCAPE, "a pre-tokenizer of terminal escapes", "\"\\x1B]0;owned\\x07\\xC2\\x9B2J\""},
        {BAD_MODEL, "unknown model", "\"llama\""},
        {BAD_NO_MODEL, "missing model", "tokenizer.ggml.model"},
        {BAD_TYPE_COUNT, "token_type count", "tokenizer.ggml.token_type"},
        {BAD_TYPE_VALUE, "token_type value", "token_type[5]"},
        {BAD_BOS, "bos out of range", "bos_token_id"},
        {BAD_DUPLICATE, "duplicate token", "duplicates"},
        {BAD_MERGE_CONTROL, "merge whose result is a control token", "its result \"he\" is a control token"},
        {BAD_MERGE_UNKNOWN_TYPE, "merge of an unknown-type token", "its operand \"h\" is an unknown token"},
    };
    char path[128];
    temp_path(path, sizeof(path), "bad");
    // the defect-free vocabulary loads
    write_vocab(path, BAD_NONE);
    GGUFFile gguf;
    Tokenizer tokenizer;
    Error err = {{0}};
    int ok = load_tokenizer(path, &gguf, &tokenizer, &err) == 0;
    check(ok, "valid small vocabulary: %s", err.message);
    if (ok) {
        check(tokenizer.pre_tokenizer == PRE_TOKENIZER_SMOLLM && tokenizer.bos_id == 1 && tokenizer.eos_id == 11,
              "small vocabulary fields (no eos_token_id: a gpt2 vocabulary's default, 11, as llama.cpp's)");
        int ids[8];
        int n = tokenizer_encode(&tokenizer, " the", 4, 0, ids, 8, &err);
        check(n == 2 && ids[0] == 258 && ids[1] == 259, "merges apply: \" the\" -> [\" t\", \"he\"], got %d tokens", n);
        n = tokenizer_encode(&tokenizer, "abcdefghij", 10, 0, ids, 8, &err);
        check(n == -1 && strstr(err.message, "more than 8") != NULL, "max_ids overflow is an error: %s", err.message);
        // a text of more bytes than max_ids of the longest tokens hold is refused before it is tokenised
        enum { LONG_TEXT = 4096 };
        char* long_text = mallocCheck(LONG_TEXT);
        memset(long_text, 'a', LONG_TEXT);
        n = tokenizer_encode(&tokenizer, long_text, LONG_TEXT, 0, ids, 8, &err);
        check(n == -1 && tokenizer.max_token_bytes > 0 && strstr(err.message, "bytes a token") != NULL,
              "a text over max_ids longest tokens is refused up front (longest %d bytes): %s", tokenizer.max_token_bytes,
              err.message);
        free(long_text);
        size_t length;
        int bad_ids[3] = {-5, 2 + 'a', 1 << 30};   // byte b is token 2 + b here
        char* decoded = tokenizer_decode(&tokenizer, bad_ids, 3, &length);
        check(length == 1 && decoded[0] == 'a', "out-of-range ids decode to nothing");
        free(decoded);
        tokenizer_free(&tokenizer);
        gguf_close(&gguf);
    }
    // a vocabulary without the byte 'q' loads, and encode drops the byte, like llama.cpp; likewise a byte whose
    // token is typed unknown (its bytes would be its literal text)
    static const struct { int defect; const char* text; const char* what; } dropped[] = {
        {BAD_NO_BYTE, "aqa", "without a token"}, {BAD_BYTE_UNKNOWN, "axa", "whose token is typed unknown"}};
    for (int d = 0; d < 2; d++) {
        write_vocab(path, dropped[d].defect);
        ok = load_tokenizer(path, &gguf, &tokenizer, &err) == 0;
        check(ok, "vocabulary with a byte %s: %s", dropped[d].what, err.message);
        if (!ok) { continue; }
        int ids[8];
        int n = tokenizer_encode(&tokenizer, dropped[d].text, 3, 0, ids, 8, &err);
        check(n == 2 && ids[0] == 2 + 'a' && ids[1] == 2 + 'a', "a byte %s is dropped (got %d ids)", dropped[d].what, n);
        tokenizer_free(&tokenizer);
        gguf_close(&gguf);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_vocab(path, cases[i].defect);
        err.message[0] = '\0';
        int status = load_tokenizer(path, &gguf, &tokenizer, &err);
        check(status == -1, "%s: loaded, expected an error", cases[i].name);
        check(strstr(err.message, cases[i].message_part) != NULL && strstr(err.message, path) != NULL,
              "%s: message \"%s\" should name the file and contain \"%s\"", cases[i].name, err.message, cases[i].message_part);
        int raw_control = 0;
        for (const unsigned char* c = (const unsigned char*)err.message; *c; c++) {
            raw_control += *c < 0x20 || *c == 0x7F || (*c == 0xC2 && c[1] >= 0x80 && c[1] <= 0x9F);   // C0, DEL, C1
        }
        check(raw_control == 0, "%s: the message holds %d raw control bytes", cases[i].name, raw_control);
        if (status == 0) { tokenizer_free(&tokenizer); gguf_close(&gguf); }
    }
    unlink(path);
}

// ----------------------------------------------------------------------------
// the real model

static void test_model(const char* path) {
    if (access(path, R_OK) != 0) {
        printf("skipping the model checks: %s not found\n", path);
        return;
    }
    GGUFFile gguf;
    Tokenizer tokenizer;
    Error err = {{0}};
    if (load_tokenizer(path, &gguf, &tokenizer, &err) != 0) { check(0, "load %s: %s", path, err.message); return; }
    check(tokenizer.vocab_size == 49152 && tokenizer.bos_id == 1 && tokenizer.eos_id == 2 && tokenizer.add_bos == 0,
          "SmolLM2 tokenizer fields");
    check(tokenizer.pre_tokenizer == PRE_TOKENIZER_SMOLLM, "SmolLM2 uses the smollm pre-tokenizer");

    // Expected ids from llama.cpp (llama-cpp-python 0.3.36):
    //   Llama(path, vocab_only=True).tokenize(text.encode(), add_bos=False, special=...)
    { const int e[] = {19556, 905, 216, 33, 34, 35}; check_ids(&tokenizer, "Hello world 123", 0, e, 6); }
    { const int e[] = {57, 5248, 2090, 346, 3060, 702, 357, 30}; check_ids(&tokenizer, "I'm sure you'll like it.", 0, e, 8); }
    { const int e[] = {216, 5600, 197, 197, 100, 7366, 198, 198, 2241, 5110}; check_ids(&tokenizer, "  spaces\t\ttabs\n\nnewlines", 0, e, 10); }
    { const int e[] = {83, 1939, 2756, 17097, 241, 115, 40993, 179, 120, 248, 40303, 218};
      check_ids(&tokenizer, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80", 0, e, 12); }
    { const int e[] = {104, 446, 216, 35, 30, 33, 36, 33, 37, 41, 43}; check_ids(&tokenizer, "x = 3.14159;", 0, e, 11); }
    { const int e[] = {1, 4093, 198, 26843, 2, 198}; check_ids(&tokenizer, "<|im_start|>user\nHi<|im_end|>\n", 1, e, 6); }
    { const int e[] = {44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306, 79, 486, 108, 46, 198};
      check_ids(&tokenizer, "<|im_start|>user\nHi<|im_end|>\n", 0, e, 18); }

    int length;
    const char* bytes = tokenizer_token_bytes(&tokenizer, 2, &length);
    check(length == 10 && memcmp(bytes, "<|im_end|>", 10) == 0, "control token bytes are its text");
    bytes = tokenizer_token_bytes(&tokenizer, 905, &length);
    check(length == 6 && memcmp(bytes, " world", 6) == 0, "token 905 is \" world\"");
    run_round_trips(&tokenizer, "SmolLM2");
    tokenizer_free(&tokenizer);
    gguf_close(&gguf);
}

// ----------------------------------------------------------------------------
// driver mode for the oracle: text on stdin -> ids on stdout

static int tokenize_stdin(const char* model, int parse_special) {
    size_t capacity = 1 << 16, length = 0;
    char* text = (char*)mallocCheck(capacity);
    size_t got;
    while ((got = fread(text + length, 1, capacity - length, stdin)) > 0) {
        length += got;
        if (length == capacity) {
            char* grown = (char*)mallocCheck(2 * capacity);
            memcpy(grown, text, length);
            free(text);
            text = grown;
            capacity *= 2;
        }
    }
    GGUFFile gguf;
    Tokenizer tokenizer;
    Error err = {{0}};
    if (load_tokenizer(model, &gguf, &tokenizer, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); free(text); return 1; }
    int max_ids = (int)length + 16;
    int* ids = (int*)mallocCheck((size_t)max_ids * sizeof(int));
    int n = tokenizer_encode(&tokenizer, text, length, parse_special, ids, max_ids, &err);
    if (n < 0) { fprintf(stderr, "error: %s\n", err.message); }
    for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", ids[i]); }
    printf("\n");
    free(ids); free(text);
    tokenizer_free(&tokenizer);
    gguf_close(&gguf);
    return n < 0;
}

// Batch driver mode: records "<parse_special 0|1> <byte count>\n<bytes>" on stdin, one line of ids each.
static int tokenize_batch(const char* model) {
    GGUFFile gguf;
    Tokenizer tokenizer;
    Error err = {{0}};
    if (load_tokenizer(model, &gguf, &tokenizer, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    int parse_special, status = 0;
    size_t length;
    while (scanf("%d %zu", &parse_special, &length) == 2 && getchar() == '\n') {
        char* text = (char*)mallocCheck(length + 1);
        int* ids = (int*)mallocCheck((length + 16) * sizeof(int));
        if (fread(text, 1, length, stdin) != length) { free(text); free(ids); status = 1; break; }
        int n = tokenizer_encode(&tokenizer, text, length, parse_special, ids, (int)length + 16, &err);
        if (n < 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
        for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", ids[i]); }
        printf("\n");
        free(text); free(ids);
    }
    tokenizer_free(&tokenizer);
    gguf_close(&gguf);
    return status;
}

int main(int argc, char** argv) {
    if (argc >= 3 && strcmp(argv[1], "--tokenize-batch") == 0) { return tokenize_batch(argv[2]); }
    if (argc >= 3 && strcmp(argv[1], "--tokenize") == 0) {
        return tokenize_stdin(argv[2], argc >= 4 && strcmp(argv[3], "--special") == 0);
    }
    test_byte_mapping();
    test_classes();
    test_pretokenizer();
    test_chat_template();
    test_tiny_tokenizer();
    test_crafted_collisions();
    test_control_looking();
    test_malformed();
    test_model(argc >= 2 ? argv[1] : DEFAULT_MODEL);
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed == 0 ? 0 : 1;
}
