/*
tokenizer.c: the byte-level BPE tokenizer (GPT-2 style) of a GGUF model, matching llama.cpp.

Contract:
  - tokenizer_load_gguf reads tokenizer.ggml.{model, pre, tokens, token_type, merges, bos_token_id,
    eos_token_id, add_bos_token, add_eos_token}, validates all of it, and returns -1 with a message naming the file and
    the key on any problem. It never exits on bad input.
  - tokenizer_encode gives the same ids as llama.cpp's llama_tokenize(text, add_special = false,
    parse_special) for valid UTF-8, with the pre-tokenizers "smollm" and "gpt-2" (aka "gpt2").
  - For every input, decode(encode(text)) == text, byte for byte, invalid UTF-8 included, provided
    the vocabulary has a token for every byte of the text. (SmolLM2 lacks 21 byte tokens: 0x04 0x06
    0x13 0x14 0x16 0x1D 0xC0 0xC1 0xF1 0xF2 0xF5..0xFF. Such bytes cannot be represented: encode drops
    them, as llama.cpp does within valid UTF-8; bytes that are not valid UTF-8 llama.cpp first replaces
    with U+FFFD, which is not done here (see below). The tiny vocabulary below has all 256.)

The encode pipeline, one section each below:
  1. special tokens: cut the text at occurrences of control / user-defined token texts (like llama.cpp's
     tokenizer_st_partition); those pieces become their token directly.
  2. pre-tokenizer: decode UTF-8 into code points, classify each (letter \p{L}, number \p{N},
     whitespace \s, other) and split with a hand-written version of the GPT-2 regex
         's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
     For "smollm" every \p{N} code point is first cut out on its own (llama.cpp's regex "\p{N}"), and
     the GPT-2 split then runs inside each cut, which it cannot look across.
  3. BPE: each pre-token's bytes start as byte tokens; the adjacent pair with the lowest merge rank is
     merged (leftmost first on ties) until no pair has a merge.

Invalid UTF-8 (llama.cpp's rule): a byte that does not start a well-formed sequence counts as one code
point U+FFFD (class "other") for splitting. llama.cpp then really replaces the byte by the three bytes
of U+FFFD, which loses the input; we keep the original byte instead, so pre-token boundaries match
llama.cpp exactly and only the bytes inside such a pre-token differ. Same for the overlong / surrogate
sequences llama.cpp's lenient decoder accepts: classified by their decoded value, bytes kept as given.
*/
#include "aurora.h"
#include "unicode_data.h"

enum { PRE_TOKENIZER_GPT2 = 0, PRE_TOKENIZER_SMOLLM = 1 };

// ----------------------------------------------------------------------------
// hash maps: token text -> id, merge pair (left id, right id) -> rank and merged id
//
// Both are open addressing with linear probing, at most half full. Their hashes are keyed by a seed drawn
// at each load from the clock, the process id and a stack address: a vocabulary crafted so that its texts
// (or its merge pairs) share a slot under a fixed hash would make every insertion walk all the ones before
// it, a load quadratic in the vocabulary's size. The seed moves only where entries sit, never what a
// lookup answers, so ids are the same on every run.

static uint64_t tokenizer_hash_u64(uint64_t x) {   // splitmix64 finaliser
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t tokenizer_hash_bytes(uint64_t seed, const char* text, size_t length) {
    uint64_t hash = 1469598103934665603ull ^ seed;   // FNV-1a from the seed
    for (size_t i = 0; i < length; i++) { hash = (hash ^ (uint8_t)text[i]) * 1099511628211ull; }
    // FNV-1a's low bits depend only on the low bits of its state and input, and the slot is the low bits:
    // the finaliser makes the slot depend on all 64 (and so on the seed)
    return tokenizer_hash_u64(hash ^ seed);
}

static uint64_t tokenizer_hash_seed(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int on_stack = 0;
    uint64_t seed = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    seed = tokenizer_hash_u64(seed ^ ((uint64_t)getpid() << 32));
    return tokenizer_hash_u64(seed ^ (uint64_t)(uintptr_t)&on_stack);
}

static uint64_t tokenizer_table_capacity(uint64_t count) {   // power of two, at most half full
    uint64_t capacity = 16;
    while (capacity < 2 * count) { capacity *= 2; }
    return capacity;
}

// Everything private that hangs off Tokenizer.token_lookup.
typedef struct {
    uint64_t capacity;
    uint64_t seed;              // the hash's key (above)
    int* slots;                 // (capacity) token id, or -1 for an empty slot
    int* token_length;          // (V) byte length of tokens[id]
    int byte_token[256];        // id of the token for each single byte
    int* special_ids;           // control / user-defined / unknown tokens, longest text first
    int n_special;
} TokenizerLookup;

struct TokenizerMergeTable {
    uint64_t capacity;
    uint64_t seed;              // the hash's key (above)
    uint64_t* keys;             // (capacity) (left << 32) | right
    int* ranks;                 // (capacity) rank, or -1 for an empty slot
    int* merged;                // (capacity) id of the merged token
};

// Returns the id of the token whose text is the `length` bytes at text, or -1.
static int tokenizer_lookup(const Tokenizer* tokenizer, const char* text, size_t length) {
    const TokenizerLookup* lookup = (const TokenizerLookup*)tokenizer->token_lookup;
    uint64_t mask = lookup->capacity - 1;
    for (uint64_t slot = tokenizer_hash_bytes(lookup->seed, text, length) & mask;; slot = (slot + 1) & mask) {
        int id = lookup->slots[slot];
        if (id < 0) { return -1; }
        if ((size_t)lookup->token_length[id] == length && memcmp(tokenizer->tokens[id], text, length) == 0) { return id; }
    }
}

// Inserts id under its own text; returns the id already there if the text is a duplicate, else -1.
static int tokenizer_lookup_insert(Tokenizer* tokenizer, int id) {
    TokenizerLookup* lookup = (TokenizerLookup*)tokenizer->token_lookup;
    uint64_t mask = lookup->capacity - 1;
    const char* text = tokenizer->tokens[id];
    size_t length = (size_t)lookup->token_length[id];
    for (uint64_t slot = tokenizer_hash_bytes(lookup->seed, text, length) & mask;; slot = (slot + 1) & mask) {
        int other = lookup->slots[slot];
        if (other < 0) { lookup->slots[slot] = id; return -1; }
        if ((size_t)lookup->token_length[other] == length && memcmp(tokenizer->tokens[other], text, length) == 0) { return other; }
    }
}

static uint64_t bpe_pair_key(int left, int right) { return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right; }

// The merge of (left, right): returns its rank and sets *merged, or returns -1 if there is none.
static int bpe_merge_rank(const TokenizerMergeTable* table, int left, int right, int* merged) {
    uint64_t key = bpe_pair_key(left, right), mask = table->capacity - 1;
    for (uint64_t slot = tokenizer_hash_u64(key ^ table->seed) & mask;; slot = (slot + 1) & mask) {
        if (table->ranks[slot] < 0) { return -1; }
        if (table->keys[slot] == key) { *merged = table->merged[slot]; return table->ranks[slot]; }
    }
}

// Adds a merge unless the pair already has one (like llama.cpp, the first occurrence wins).
static void bpe_merge_insert(TokenizerMergeTable* table, int left, int right, int rank, int merged) {
    uint64_t key = bpe_pair_key(left, right), mask = table->capacity - 1;
    for (uint64_t slot = tokenizer_hash_u64(key ^ table->seed) & mask;; slot = (slot + 1) & mask) {
        if (table->ranks[slot] < 0) {
            table->keys[slot] = key; table->ranks[slot] = rank; table->merged[slot] = merged;
            return;
        }
        if (table->keys[slot] == key) { return; }
    }
}

// ----------------------------------------------------------------------------
// UTF-8 and the GPT-2 byte <-> unicode mapping

// GPT-2 shows every byte as a printable code point: bytes that are printable Latin-1 stand for
// themselves, the other 68 become U+0100, U+0101, ... in byte order. So " " is "Ġ" (U+0120).
static int utf8_byte_to_codepoint(int byte) {
    static int table[256];
    static int ready = 0;
    if (!ready) {
        int next = 256;
        for (int b = 0; b < 256; b++) {
            int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? b : next++;
        }
        ready = 1;
    }
    return table[byte];
}

// The byte a code point of GPT-2 token text stands for, or -1.
static int utf8_codepoint_to_byte(uint32_t codepoint) {
    static int table[512];
    static int ready = 0;
    if (!ready) {
        for (int i = 0; i < 512; i++) { table[i] = -1; }
        for (int b = 0; b < 256; b++) { table[utf8_byte_to_codepoint(b)] = b; }
        ready = 1;
    }
    return codepoint < 512 ? table[codepoint] : -1;
}

// Writes the UTF-8 form of a code point (< 0x200000) into out; returns its length.
static int utf8_encode(uint32_t codepoint, char* out) {
    if (codepoint < 0x80) { out[0] = (char)codepoint; return 1; }
    if (codepoint < 0x800) {
        out[0] = (char)(0xC0 | (codepoint >> 6)); out[1] = (char)(0x80 | (codepoint & 0x3F));
        return 2;
    }
    if (codepoint < 0x10000) {
        out[0] = (char)(0xE0 | (codepoint >> 12)); out[1] = (char)(0x80 | ((codepoint >> 6) & 0x3F));
        out[2] = (char)(0x80 | (codepoint & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (codepoint >> 18)); out[1] = (char)(0x80 | ((codepoint >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((codepoint >> 6) & 0x3F)); out[3] = (char)(0x80 | (codepoint & 0x3F));
    return 4;
}

// Decodes one code point at text[pos] exactly as llama.cpp's unicode_cpt_from_utf8 does: the lead
// byte gives the length, continuation bytes must be 10xxxxxx, nothing else is checked (overlong forms
// and surrogates pass). A byte that starts no such sequence is one U+FFFD. Returns the bytes used.
static int utf8_decode_lenient(const uint8_t* text, size_t length, size_t pos, uint32_t* codepoint) {
    uint8_t lead = text[pos];
    int n = lead < 0x80 ? 1 : lead < 0xC0 ? 0 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : lead < 0xF8 ? 4 : 0;
    if (n == 0 || pos + (size_t)n > length) { *codepoint = 0xFFFD; return 1; }
    uint32_t value = n == 1 ? lead : n == 2 ? (lead & 0x1Fu) : n == 3 ? (lead & 0x0Fu) : (lead & 0x07u);
    for (int i = 1; i < n; i++) {
        if ((text[pos + (size_t)i] & 0xC0) != 0x80) { *codepoint = 0xFFFD; return 1; }
        value = (value << 6) | (text[pos + (size_t)i] & 0x3Fu);
    }
    *codepoint = value;
    return n;
}

// Decodes strictly (for token text, which must be valid); returns the bytes used or 0 if invalid.
static int utf8_decode_strict(const uint8_t* text, size_t length, size_t pos, uint32_t* codepoint) {
    int n = utf8_decode_lenient(text, length, pos, codepoint);
    if (*codepoint == 0xFFFD && n == 1 && text[pos] >= 0x80) { return 0; }
    return n;
}

// ----------------------------------------------------------------------------
// code-point classes (tables generated by tools/gen_unicode.py, same as llama.cpp's unicode-data.cpp)

enum { CHAR_NONE = 0, CHAR_LETTER, CHAR_NUMBER, CHAR_WHITESPACE, CHAR_OTHER };  // NONE: past a chunk's end

static int utf8_in_ranges(uint32_t codepoint, const uint32_t (*ranges)[2], size_t n) {
    size_t lo = 0, hi = n;    // binary search for the last range whose first <= codepoint
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ranges[mid][0] <= codepoint) { lo = mid + 1; } else { hi = mid; }
    }
    return lo > 0 && codepoint <= ranges[lo - 1][1];
}

#define TOKENIZER_COUNT(array) (sizeof(array) / sizeof(array[0]))

static int utf8_char_class(uint32_t codepoint) {
    if (codepoint < 0x80) {   // ASCII fast path
        if ((codepoint >= 'a' && codepoint <= 'z') || (codepoint >= 'A' && codepoint <= 'Z')) { return CHAR_LETTER; }
        if (codepoint >= '0' && codepoint <= '9') { return CHAR_NUMBER; }
        if (codepoint == ' ' || (codepoint >= 0x09 && codepoint <= 0x0D)) { return CHAR_WHITESPACE; }
        return CHAR_OTHER;
    }
    if (utf8_in_ranges(codepoint, unicode_whitespace_ranges, TOKENIZER_COUNT(unicode_whitespace_ranges))) { return CHAR_WHITESPACE; }
    if (utf8_in_ranges(codepoint, unicode_letter_ranges, TOKENIZER_COUNT(unicode_letter_ranges))) { return CHAR_LETTER; }
    if (utf8_in_ranges(codepoint, unicode_number_ranges, TOKENIZER_COUNT(unicode_number_ranges))) { return CHAR_NUMBER; }
    return CHAR_OTHER;   // punctuation, symbols, marks, controls, unassigned, > U+10FFFF
}

// ----------------------------------------------------------------------------
// pre-tokenizer: text -> pieces (byte ranges) that BPE then handles one at a time

typedef struct {
    size_t start;               // byte offset in the fragment
    int length;                 // bytes
    uint32_t codepoint;
    int char_class;             // CHAR_*
} TokenizerChar;

typedef struct {
    size_t* ends;               // char index where each piece ends (a piece starts where the last ended)
    size_t count, capacity;
} TokenizerPieces;

static void tokenizer_pieces_push(TokenizerPieces* pieces, size_t end) {
    if (pieces->count == pieces->capacity) {
        pieces->capacity = pieces->capacity ? 2 * pieces->capacity : 64;
        size_t* grown = (size_t*)mallocCheck(pieces->capacity * sizeof(size_t));
        if (pieces->count > 0) { memcpy(grown, pieces->ends, pieces->count * sizeof(size_t)); }
        free(pieces->ends);
        pieces->ends = grown;
    }
    pieces->ends[pieces->count++] = end;
}

// The GPT-2 regex over chars [begin, end), a hand-written twin of llama.cpp's
// unicode_regex_split_custom_gpt2. Chars outside [begin, end) read as CHAR_NONE.
static void tokenizer_split_gpt2(const TokenizerChar* chars, size_t begin, size_t end, TokenizerPieces* pieces) {
#define CLASS_AT(p) ((p) < end ? chars[(p)].char_class : CHAR_NONE)
    size_t pos = begin;
    while (pos < end) {
        uint32_t c = chars[pos].codepoint;
        // 's|'t|'re|'ve|'m|'ll|'d  (lowercase only, as in GPT-2)
        if (c == '\'' && pos + 1 < end) {
            uint32_t next = chars[pos + 1].codepoint;
            if (next == 's' || next == 't' || next == 'm' || next == 'd') {
                pos += 2; tokenizer_pieces_push(pieces, pos); continue;
            }
            if (pos + 2 < end) {
                uint32_t after = chars[pos + 2].codepoint;
                if ((next == 'r' && after == 'e') || (next == 'v' && after == 'e') || (next == 'l' && after == 'l')) {
                    pos += 3; tokenizer_pieces_push(pieces, pos); continue;
                }
            }
        }
        // ' ?\p{L}+' | ' ?\p{N}+' | ' ?[^\s\p{L}\p{N}]+': an optional space, then a run of one class
        int run_class = c == ' ' ? CLASS_AT(pos + 1) : chars[pos].char_class;
        if (run_class == CHAR_LETTER || run_class == CHAR_NUMBER || run_class == CHAR_OTHER) {
            if (c == ' ') { pos++; }
            while (CLASS_AT(pos) == run_class) { pos++; }
            tokenizer_pieces_push(pieces, pos);
            continue;
        }
        // '\s+(?!\S)': a whitespace run not at the chunk's end leaves its last char to the next piece
        size_t n_space = 0;
        while (CLASS_AT(pos + n_space) == CHAR_WHITESPACE) { n_space++; }
        if (n_space > 1 && pos + n_space < end) {
            pos += n_space - 1; tokenizer_pieces_push(pieces, pos); continue;
        }
        // '\s+'
        if (n_space > 0) { pos += n_space; tokenizer_pieces_push(pieces, pos); continue; }
        pos++;   // no match (cannot happen with these classes; kept as in llama.cpp)
        tokenizer_pieces_push(pieces, pos);
    }
#undef CLASS_AT
}

// Decodes a fragment into chars (caller frees *out) and returns their count.
static size_t tokenizer_decode_chars(const char* text, size_t length, TokenizerChar** out) {
    TokenizerChar* chars = (TokenizerChar*)mallocCheck((length + 1) * sizeof(TokenizerChar));
    size_t n = 0;
    for (size_t pos = 0; pos < length;) {
        uint32_t codepoint;
        int used = utf8_decode_lenient((const uint8_t*)text, length, pos, &codepoint);
        chars[n].start = pos;
        chars[n].length = used;
        chars[n].codepoint = codepoint;
        chars[n].char_class = utf8_char_class(codepoint);
        n++;
        pos += (size_t)used;
    }
    *out = chars;
    return n;
}

// Splits chars [0, n) into pieces with the model's pre-tokenizer.
static void tokenizer_pretokenize(int pre_tokenizer, const TokenizerChar* chars, size_t n, TokenizerPieces* pieces) {
    if (pre_tokenizer == PRE_TOKENIZER_GPT2) { tokenizer_split_gpt2(chars, 0, n, pieces); return; }
    // smollm: regex "\p{N}" first isolates every number code point; the GPT-2 split runs within each cut
    size_t chunk_start = 0;
    for (size_t i = 0; i < n; i++) {
        if (chars[i].char_class != CHAR_NUMBER) { continue; }
        if (i > chunk_start) { tokenizer_split_gpt2(chars, chunk_start, i, pieces); }
        tokenizer_split_gpt2(chars, i, i + 1, pieces);
        chunk_start = i + 1;
    }
    if (n > chunk_start) { tokenizer_split_gpt2(chars, chunk_start, n, pieces); }
}

// ----------------------------------------------------------------------------
// BPE over one piece: a linked list of symbols and a min-heap of candidate merges

typedef struct { int id, prev, next; } BpeSymbol;                          // id -1: merged away
typedef struct { int rank, left, right, left_id, right_id, merged; } BpeCandidate;

typedef struct {
    BpeSymbol* symbols;
    BpeCandidate* heap;
    int heap_count;
    int capacity;               // symbols; the heap holds up to 3 * capacity
} BpeScratch;

static void bpe_scratch_reserve(BpeScratch* scratch, int n) {
    if (n <= scratch->capacity) { return; }
    free(scratch->symbols); free(scratch->heap);
    scratch->capacity = n;
    scratch->symbols = (BpeSymbol*)mallocCheck((size_t)n * sizeof(BpeSymbol));
    scratch->heap = (BpeCandidate*)mallocCheck((size_t)n * 3 * sizeof(BpeCandidate));
}

static int bpe_candidate_before(const BpeCandidate* a, const BpeCandidate* b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bpe_heap_push(BpeScratch* s, BpeCandidate candidate) {
    int i = s->heap_count++;
    s->heap[i] = candidate;
    while (i > 0 && bpe_candidate_before(&s->heap[i], &s->heap[(i - 1) / 2])) {
        BpeCandidate t = s->heap[i]; s->heap[i] = s->heap[(i - 1) / 2]; s->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static BpeCandidate bpe_heap_pop(BpeScratch* s) {
    BpeCandidate top = s->heap[0];
    s->heap[0] = s->heap[--s->heap_count];
    for (int i = 0;;) {
        int smallest = i, l = 2 * i + 1, r = 2 * i + 2;
        if (l < s->heap_count && bpe_candidate_before(&s->heap[l], &s->heap[smallest])) { smallest = l; }
        if (r < s->heap_count && bpe_candidate_before(&s->heap[r], &s->heap[smallest])) { smallest = r; }
        if (smallest == i) { break; }
        BpeCandidate t = s->heap[i]; s->heap[i] = s->heap[smallest]; s->heap[smallest] = t;
        i = smallest;
    }
    return top;
}

static void bpe_add_candidate(const Tokenizer* tokenizer, BpeScratch* s, int left, int right) {
    if (left < 0 || right < 0 || s->symbols[left].id < 0 || s->symbols[right].id < 0) { return; }
    int merged;
    int rank = bpe_merge_rank(tokenizer->merges, s->symbols[left].id, s->symbols[right].id, &merged);
    if (rank < 0) { return; }
    BpeCandidate candidate = {rank, left, right, s->symbols[left].id, s->symbols[right].id, merged};
    bpe_heap_push(s, candidate);
}

// Appends the ids of one piece (n bytes) to ids[*count ...]; returns -1 if max_ids is exceeded.
static int bpe_encode_piece(const Tokenizer* tokenizer, BpeScratch* s, const uint8_t* bytes, int n,
                            int* ids, int* count, int max_ids) {
    const TokenizerLookup* lookup = (const TokenizerLookup*)tokenizer->token_lookup;
    bpe_scratch_reserve(s, n);
    for (int i = 0; i < n; i++) {
        s->symbols[i].id = lookup->byte_token[bytes[i]];   // -1 if the vocabulary lacks this byte
        s->symbols[i].prev = i - 1;
        s->symbols[i].next = i + 1 < n ? i + 1 : -1;
    }
    s->heap_count = 0;
    for (int i = 0; i + 1 < n; i++) { bpe_add_candidate(tokenizer, s, i, i + 1); }
    while (s->heap_count > 0) {
        BpeCandidate c = bpe_heap_pop(s);
        BpeSymbol* left = &s->symbols[c.left];
        BpeSymbol* right = &s->symbols[c.right];
        // stale: one side has merged since this candidate was queued
        if (left->id != c.left_id || right->id != c.right_id || left->next != c.right) { continue; }
        left->id = c.merged;
        left->next = right->next;
        if (right->next >= 0) { s->symbols[right->next].prev = c.left; }
        right->id = -1;
        bpe_add_candidate(tokenizer, s, left->prev, c.left);
        bpe_add_candidate(tokenizer, s, c.left, left->next);
    }
    for (int i = 0; i >= 0; i = s->symbols[i].next) {
        if (s->symbols[i].id < 0) { continue; }   // a byte without a token: dropped, as llama.cpp does
        if (*count >= max_ids) { return -1; }
        ids[(*count)++] = s->symbols[i].id;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// special tokens: cut the text at control / user-defined token texts (llama.cpp tokenizer_st_partition)

typedef struct { int id; size_t start, length; } TokenizerFragment;   // id -1: raw text [start, start+length)

static size_t tokenizer_find(const char* text, size_t length, const char* needle, size_t needle_length) {
    if (needle_length == 0 || needle_length > length) { return (size_t)-1; }
    for (size_t i = 0; i + needle_length <= length; i++) {
        if (text[i] == needle[0] && memcmp(text + i, needle, needle_length) == 0) { return i; }
    }
    return (size_t)-1;
}

// Returns the fragments (caller frees) and their count in *n_out. Like llama.cpp, special tokens are
// tried one after another, longest text first, each cutting every raw fragment left so far.
// Control (and unknown) tokens only take part with parse_special; user-defined tokens always do.
static TokenizerFragment* tokenizer_partition(const Tokenizer* tokenizer, const char* text, size_t length,
                                              int parse_special, size_t* n_out) {
    const TokenizerLookup* lookup = (const TokenizerLookup*)tokenizer->token_lookup;
    size_t count = 1, capacity = 16;
    TokenizerFragment* fragments = (TokenizerFragment*)mallocCheck(capacity * sizeof(TokenizerFragment));
    fragments[0] = (TokenizerFragment){-1, 0, length};
    for (int s = 0; s < lookup->n_special; s++) {
        int id = lookup->special_ids[s];
        if (!parse_special && tokenizer->token_types[id] != TOKEN_USER_DEFINED) { continue; }
        const char* needle = tokenizer->tokens[id];
        size_t needle_length = (size_t)lookup->token_length[id];
        size_t n_next = 0, capacity_next = count + 16;
        TokenizerFragment* next = (TokenizerFragment*)mallocCheck(capacity_next * sizeof(TokenizerFragment));
        for (size_t f = 0; f < count; f++) {
            TokenizerFragment fragment = fragments[f];
            for (;;) {
                size_t at = fragment.id >= 0 ? (size_t)-1
                          : tokenizer_find(text + fragment.start, fragment.length, needle, needle_length);
                if (n_next + 3 > capacity_next) {
                    capacity_next *= 2;
                    TokenizerFragment* grown = (TokenizerFragment*)mallocCheck(capacity_next * sizeof(TokenizerFragment));
                    memcpy(grown, next, n_next * sizeof(TokenizerFragment));
                    free(next);
                    next = grown;
                }
                if (at == (size_t)-1) {
                    if (fragment.id >= 0 || fragment.length > 0) { next[n_next++] = fragment; }
                    break;
                }
                if (at > 0) { next[n_next++] = (TokenizerFragment){-1, fragment.start, at}; }
                next[n_next++] = (TokenizerFragment){id, fragment.start + at, needle_length};
                fragment.start += at + needle_length;
                fragment.length -= at + needle_length;
            }
        }
        free(fragments);
        fragments = next;
        count = n_next;
    }
    *n_out = count;
    return fragments;
}

// ----------------------------------------------------------------------------
// encode / decode

int tokenizer_encode(const Tokenizer* tokenizer, const char* text, size_t len, int parse_special,
                     int* ids, int max_ids, Error* err) {
    // a text longer than max_ids of the longest tokens cannot fit (its bytes without a token aside): refused
    // before the work and the memory of tokenizing it all (24 bytes a text byte; a 100 MB prompt took 6 GB)
    if (max_ids >= 0 && tokenizer->max_token_bytes > 0 && len / (size_t)tokenizer->max_token_bytes > (size_t)max_ids) {
        return error_set(err, "tokenizer_encode: the text (%zu bytes) needs more than %d tokens (at most %d bytes a token)",
                         len, max_ids, tokenizer->max_token_bytes);
    }
    size_t n_fragments;
    TokenizerFragment* fragments = tokenizer_partition(tokenizer, text, len, parse_special, &n_fragments);
    BpeScratch scratch = {0};
    TokenizerPieces pieces = {0};
    int count = 0, status = 0;
    for (size_t f = 0; f < n_fragments && status == 0; f++) {
        if (fragments[f].id >= 0) {
            if (count >= max_ids) { status = -1; break; }
            ids[count++] = fragments[f].id;
            continue;
        }
        const char* fragment = text + fragments[f].start;
        TokenizerChar* chars;
        size_t n_chars = tokenizer_decode_chars(fragment, fragments[f].length, &chars);
        pieces.count = 0;
        tokenizer_pretokenize(tokenizer->pre_tokenizer, chars, n_chars, &pieces);
        size_t piece_start = 0;
        for (size_t p = 0; p < pieces.count && status == 0; p++) {
            size_t piece_end = pieces.ends[p];
            size_t byte_start = chars[piece_start].start;
            size_t byte_end = chars[piece_end - 1].start + (size_t)chars[piece_end - 1].length;
            status = bpe_encode_piece(tokenizer, &scratch, (const uint8_t*)fragment + byte_start,
                                      (int)(byte_end - byte_start), ids, &count, max_ids);
            piece_start = piece_end;
        }
        free(chars);
    }
    free(fragments); free(scratch.symbols); free(scratch.heap); free(pieces.ends);
    if (status != 0) { return error_set(err, "tokenizer_encode: the text (%zu bytes) needs more than %d tokens", len, max_ids); }
    return count;
}

const char* tokenizer_token_bytes(const Tokenizer* tokenizer, int id, int* length) {
    if (id < 0 || id >= tokenizer->vocab_size) { *length = 0; return NULL; }
    *length = tokenizer->token_bytes_length[id];
    return tokenizer->token_bytes[id];
}

// Ids outside [0, vocab_size) decode to nothing.
char* tokenizer_decode(const Tokenizer* tokenizer, const int* ids, int n_ids, size_t* length) {
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] >= 0 && ids[i] < tokenizer->vocab_size) { total += (size_t)tokenizer->token_bytes_length[ids[i]]; }
    }
    char* out = (char*)mallocCheck(total + 1);
    size_t at = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= tokenizer->vocab_size) { continue; }
        memcpy(out + at, tokenizer->token_bytes[ids[i]], (size_t)tokenizer->token_bytes_length[ids[i]]);
        at += (size_t)tokenizer->token_bytes_length[ids[i]];
    }
    out[at] = '\0';
    if (length != NULL) { *length = at; }
    return out;
}

// The template in SmolLM2-Instruct's tokenizer.chat_template (ChatML), for one user message and the
// default system prompt, with add_generation_prompt. Every model the tokenizer reads ("smollm" and "gpt-2"
// pre-tokenizers) is checked for its two control tokens before the template is used: a vocabulary without
// them would spell "<|im_start|>" out in plain text and the model would see a prompt it was never trained on.
// The head ends in text ("user\n") that the user's message continues: see prompt_encode.
#define CHAT_HEAD_TO_LAST_CONTROL \
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>"
#define CHAT_HEAD_TEXT "user\n"
static const char* const CHAT_TEMPLATE_HEAD = CHAT_HEAD_TO_LAST_CONTROL CHAT_HEAD_TEXT;
static const char* const CHAT_TEMPLATE_TAIL = "<|im_end|>\n<|im_start|>assistant\n";

int prompt_chat_check(const Tokenizer* tokenizer, Error* err) {
    static const char* const controls[2] = {"<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 2; i++) {
        int id = tokenizer_lookup(tokenizer, controls[i], strlen(controls[i]));
        if (id < 0 || tokenizer->token_types[id] != TOKEN_CONTROL) {
            return error_set(err, "a chat prompt is wrapped in the ChatML template, but this model's vocabulary has no "
                             "%s control token (its chat template is another one, which this program does not "
                             "apply; a prompt's own control-token spellings stay text, so the model cannot be "
                             "given that template either)", controls[i]);
        }
    }
    return 0;
}

// BOS (when the model asks for it), then the pieces: the first and last with special tokens, the middle one
// (the user's text) always as plain text; then EOS (when the model asks for it). As llama.cpp's tokenizer
// with add_special: tokenizer.ggml.add_bos_token and add_eos_token.
static int prompt_encode_pieces(const Tokenizer* tokenizer, const char* const pieces[3], int* ids, int max_ids, Error* err) {
    int n = 0, bos = tokenizer->add_bos && tokenizer->bos_id >= 0, eos = tokenizer->add_eos && tokenizer->eos_id >= 0;
    if (bos) {
        if (max_ids < 1) { return error_set(err, "the prompt does not fit in %d tokens", max_ids); }
        ids[n++] = tokenizer->bos_id;
    }
    for (int i = 0; i < 3; i++) {
        size_t length = strlen(pieces[i]);
        if (length == 0) { continue; }
        int got = tokenizer_encode(tokenizer, pieces[i], length, i != 1, ids + n, max_ids - n, err);
        if (got < 0) { return error_set(err, "the prompt does not fit in %d tokens", max_ids); }
        n += got;
    }
    if (n == bos) {
        error_set(err, "the prompt is empty after tokenization; expected at least one token");
        return PROMPT_EMPTY;
    }
    if (eos) {
        if (n >= max_ids) { return error_set(err, "the prompt does not fit in %d tokens", max_ids); }
        ids[n++] = tokenizer->eos_id;
    }
    return n;
}

int prompt_encode(const Tokenizer* tokenizer, const char* text, int chat, int* ids, int max_ids, Error* err) {
    if (!chat) {
        const char* const pieces[3] = {"", text, ""};
        return prompt_encode_pieces(tokenizer, pieces, ids, max_ids, err);
    }
    if (prompt_chat_check(tokenizer, err) != 0) { return PROMPT_NO_TEMPLATE; }
    // llama.cpp encodes the text between two control tokens as one piece, so the head's last text ("user\n")
    // and the message go together: alone, a message starting with spaces or newlines split otherwise
    // ("  hi" gave " ", " hi" where "\n  hi" gives "\n ", " hi")
    size_t n_head = strlen(CHAT_HEAD_TEXT), n_text = strlen(text);
    char* message = mallocCheck(n_head + n_text + 1);
    memcpy(message, CHAT_HEAD_TEXT, n_head);
    memcpy(message + n_head, text, n_text + 1);
    const char* const pieces[3] = {CHAT_HEAD_TO_LAST_CONTROL, message, CHAT_TEMPLATE_TAIL};
    int n = prompt_encode_pieces(tokenizer, pieces, ids, max_ids, err);
    free(message);
    return n;
}

// ----------------------------------------------------------------------------
// loading from GGUF metadata

void tokenizer_free(Tokenizer* tokenizer) {
    if (tokenizer->tokens != NULL) { free_string_array(tokenizer->tokens, (uint64_t)tokenizer->vocab_size); }
    if (tokenizer->token_bytes != NULL) {
        for (int i = 0; i < tokenizer->vocab_size; i++) { free(tokenizer->token_bytes[i]); }
        free(tokenizer->token_bytes);
    }
    free(tokenizer->token_types);
    free(tokenizer->token_bytes_length);
    TokenizerLookup* lookup = (TokenizerLookup*)tokenizer->token_lookup;
    if (lookup != NULL) { free(lookup->slots); free(lookup->token_length); free(lookup->special_ids); free(lookup); }
    TokenizerMergeTable* merges = tokenizer->merges;
    if (merges != NULL) { free(merges->keys); free(merges->ranks); free(merges->merged); free(merges); }
    memset(tokenizer, 0, sizeof(*tokenizer));
}

// The raw bytes of a token. Control / user-defined / unknown tokens are their text; other tokens are
// GPT-2 byte-to-unicode text, decoded. Returns -1 if a normal token's text is not in that form.
static int tokenizer_make_token_bytes(Tokenizer* tokenizer, int id, const char* path, Error* err) {
    const char* text = tokenizer->tokens[id];
    size_t length = strlen(text);
    int type = tokenizer->token_types[id];
    char* bytes = (char*)mallocCheck(length + 1);
    size_t n = 0;
    int literal = type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED || type == TOKEN_UNKNOWN;
    for (size_t pos = 0; pos < length && !literal;) {
        uint32_t codepoint;
        int used = utf8_decode_strict((const uint8_t*)text, length, pos, &codepoint);
        int byte = used > 0 ? utf8_codepoint_to_byte(codepoint) : -1;
        if (byte < 0) {
            if (type == TOKEN_NORMAL) {
                free(bytes);
                return error_set(err, "%s: tokenizer.ggml.tokens[%d] = \"%s\" is a normal token but is not GPT-2 "
                                 "byte-level text (character at byte %zu has no byte mapping)", path, id, text, pos);
            }
            literal = 1;   // unused / byte tokens in another form: keep their text
            break;
        }
        bytes[n++] = (char)byte;
        pos += (size_t)used;
    }
    if (literal) { memcpy(bytes, text, length); n = length; }
    bytes[n] = '\0';
    tokenizer->token_bytes[id] = bytes;
    tokenizer->token_bytes_length[id] = (int)n;
    if ((int)n > tokenizer->max_token_bytes) { tokenizer->max_token_bytes = (int)n; }
    return 0;
}

static const Tokenizer* tokenizer_sort_context;
static int tokenizer_compare_special(const void* a, const void* b) {   // longer text first, then lower id
    int x = *(const int*)a, y = *(const int*)b;
    const TokenizerLookup* lookup = (const TokenizerLookup*)tokenizer_sort_context->token_lookup;
    if (lookup->token_length[x] != lookup->token_length[y]) { return lookup->token_length[y] - lookup->token_length[x]; }
    return x - y;
}

// Reads and checks an optional token id key; leaves *out unchanged if the key is absent.
enum { TOKENIZER_GPT2_DEFAULT_ID = 11 };

static int tokenizer_optional_id(const GGUFFile* gguf, const char* key, int vocab_size, int* out, Error* err) {
    if (gguf_find(gguf, key) == NULL) { return 0; }
    int64_t value;
    if (gguf_get_int(gguf, key, &value, err) != 0) { return -1; }
    if (value < 0 || value >= vocab_size) {
        return error_set(err, "%s: %s = %lld is not a token id (vocabulary has %d tokens)",
                         gguf->path, key, (long long)value, vocab_size);
    }
    *out = (int)value;
    return 0;
}

static int tokenizer_load_merges(Tokenizer* tokenizer, const GGUFFile* gguf, Error* err) {
    const char* path = gguf->path;
    char** merges = NULL;
    uint64_t n_merges = 0;
    if (gguf_get_string_array(gguf, "tokenizer.ggml.merges", &merges, &n_merges, err) != 0) { return -1; }
    if (n_merges > (uint64_t)INT32_MAX) {
        free_string_array(merges, n_merges);
        return error_set(err, "%s: tokenizer.ggml.merges has %llu entries, too many", path, (unsigned long long)n_merges);
    }
    TokenizerMergeTable* table = (TokenizerMergeTable*)callocCheck(1, sizeof(TokenizerMergeTable));
    tokenizer->merges = table;
    table->capacity = tokenizer_table_capacity(n_merges);
    table->seed = tokenizer_hash_seed();
    table->keys = (uint64_t*)mallocCheck(table->capacity * sizeof(uint64_t));
    table->ranks = (int*)mallocCheck(table->capacity * sizeof(int));
    table->merged = (int*)mallocCheck(table->capacity * sizeof(int));
    for (uint64_t i = 0; i < table->capacity; i++) { table->ranks[i] = -1; }

    char* joined = NULL;
    size_t joined_capacity = 0;
    for (uint64_t rank = 0; rank < n_merges; rank++) {
        const char* merge = merges[rank];
        const char* space = strchr(merge, ' ');
        size_t length = strlen(merge);
        if (space == NULL || space == merge || space[1] == '\0' || strchr(space + 1, ' ') != NULL) {
            error_set(err, "%s: tokenizer.ggml.merges[%llu] = \"%s\" is not two tokens separated by one space",
                      path, (unsigned long long)rank, merge);
            goto fail;
        }
        size_t left_length = (size_t)(space - merge), right_length = length - left_length - 1;
        int left = tokenizer_lookup(tokenizer, merge, left_length);
        int right = tokenizer_lookup(tokenizer, space + 1, right_length);
        if (left < 0 || right < 0) {
            error_set(err, "%s: tokenizer.ggml.merges[%llu] = \"%s\": \"%.*s\" is not a token", path,
                      (unsigned long long)rank, merge, (int)(left < 0 ? left_length : right_length),
                      left < 0 ? merge : space + 1);
            goto fail;
        }
        if (left_length + right_length + 1 > joined_capacity) {
            free(joined);
            joined_capacity = 2 * (left_length + right_length + 1);
            joined = (char*)mallocCheck(joined_capacity);
        }
        memcpy(joined, merge, left_length);
        memcpy(joined + left_length, space + 1, right_length);
        int merged = tokenizer_lookup(tokenizer, joined, left_length + right_length);
        if (merged < 0) {
            error_set(err, "%s: tokenizer.ggml.merges[%llu] = \"%s\": the merged token \"%.*s\" is not in the vocabulary",
                      path, (unsigned long long)rank, merge, (int)(left_length + right_length), joined);
            goto fail;
        }
        // text never becomes a control token, and an unknown token's bytes are its literal text: a merge
        // that joins or makes one would turn plain text into it (llama.cpp applies such merges)
        int operands[3] = {left, right, merged};
        for (int k = 0; k < 3; k++) {
            int type = tokenizer->token_types[operands[k]];
            if (type == TOKEN_CONTROL || type == TOKEN_UNKNOWN) {
                error_set(err, "%s: tokenizer.ggml.merges[%llu] = \"%s\": %s \"%s\" is %s token (type %d); a merge joins "
                          "and makes only tokens of text (normal or byte)", path, (unsigned long long)rank, merge,
                          k == 2 ? "its result" : "its operand", tokenizer->tokens[operands[k]],
                          type == TOKEN_CONTROL ? "a control" : "an unknown", type);
                goto fail;
            }
        }
        bpe_merge_insert(table, left, right, (int)rank, merged);
    }
    free(joined);
    free_string_array(merges, n_merges);
    return 0;
fail:
    free(joined);
    free_string_array(merges, n_merges);
    return -1;
}

// ----------------------------------------------------------------------------
// end of generation: what llama.cpp stops at (llama-vocab.cpp, load: special_eog_ids), besides eos: the
// end-of-turn and end-of-message ids and the fill-in-the-middle pad, repo and separator ids the file names
// (tokenizer.ggml.*_token_id), the FIM tokens found by their text where the file names none, and every
// token whose text is one of the known end-of-turn spellings. (SmolLM2: <|endoftext|> 0, <|im_end|> 2,
// which is eos, and <reponame> 4, its FIM repo token.)
static const char* const END_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence" "\xef\xbd\x9c>",
    "[e~["};
static const char* const FIM_PAD_TEXTS[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char* const FIM_REP_TEXTS[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char* const FIM_SEP_TEXTS[] = {"<|file_sep|>", NULL};
// (the other fill-in-the-middle tokens: not ends, but control-looking: FIM_KINDS below)
static const char* const FIM_PRE_TEXTS[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
                                            "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char* const FIM_SUF_TEXTS[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>",
                                            "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char* const FIM_MID_TEXTS[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
                                            "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};

static void tokenizer_add_end(Tokenizer* tokenizer, int id) {
    if (id < 0 || id == tokenizer->eos_id) { return; }
    for (int i = 0; i < tokenizer->n_end_ids; i++) { if (tokenizer->end_ids[i] == id) { return; } }
    if (tokenizer->n_end_ids < TOKENIZER_MAX_END_IDS) { tokenizer->end_ids[tokenizer->n_end_ids++] = id; }
}

// The lowest id whose text is one of texts (NULL-terminated), or -1.
static int tokenizer_find_text(const Tokenizer* tokenizer, const char* const* texts) {
    int found = -1;
    for (int k = 0; texts[k]; k++) {
        int id = tokenizer_lookup(tokenizer, texts[k], strlen(texts[k]));
        if (id >= 0 && (found < 0 || id < found)) { found = id; }
    }
    return found;
}

// Control-looking tokens: llama.cpp (llama-vocab.cpp, load: "control-looking token ... its type will be
// overridden") makes the tokens it finds by their text as end-of-turn, end-of-generation and fill-in-the-middle
// tokens control tokens, whatever type the file gives them: every text of END_TEXTS, and each FIM kind's
// spelling where the file names no id for it. A user-defined one would otherwise be matched in plain text
// (tokenizer_partition), and a user's "<|endoftext|>" would become the end token. Only user-defined tokens
// change here: a normal one is left to the BPE as it is (so text never becomes a control token by a merge),
// and this runs after the merges' check, which reads the file's types.
static void tokenizer_control_looking(Tokenizer* tokenizer, int id) {
    if (id >= 0 && tokenizer->token_types[id] == TOKEN_USER_DEFINED) { tokenizer->token_types[id] = TOKEN_CONTROL; }
}

// The fill-in-the-middle kinds: the file's key, the spellings looked for where it names none, and whether
// llama.cpp stops at the token (pad, repo and separator: yes; prefix, suffix and middle: control-looking only).
static const struct { const char* key; const char* const* texts; int ends; } FIM_KINDS[] = {
    {"tokenizer.ggml.fim_pre_token_id", FIM_PRE_TEXTS, 0}, {"tokenizer.ggml.fim_suf_token_id", FIM_SUF_TEXTS, 0},
    {"tokenizer.ggml.fim_mid_token_id", FIM_MID_TEXTS, 0}, {"tokenizer.ggml.fim_pad_token_id", FIM_PAD_TEXTS, 1},
    {"tokenizer.ggml.fim_rep_token_id", FIM_REP_TEXTS, 1}, {"tokenizer.ggml.fim_sep_token_id", FIM_SEP_TEXTS, 1},
};

// The end ids, and the control-looking tokens made control tokens (both by the same lookups).
static int tokenizer_find_ends(Tokenizer* tokenizer, const GGUFFile* gguf, Error* err) {
    tokenizer->n_end_ids = 0;
    const char* const named[] = {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    for (int k = 0; k < 2; k++) {
        int id = -1;
        if (tokenizer_optional_id(gguf, named[k], tokenizer->vocab_size, &id, err) != 0) { return -1; }
        tokenizer_add_end(tokenizer, id);
    }
    for (size_t k = 0; k < sizeof(FIM_KINDS) / sizeof(FIM_KINDS[0]); k++) {
        int id = -1;
        if (tokenizer_optional_id(gguf, FIM_KINDS[k].key, tokenizer->vocab_size, &id, err) != 0) { return -1; }
        if (id < 0) {   // found by its text: control-looking
            id = tokenizer_find_text(tokenizer, FIM_KINDS[k].texts);
            tokenizer_control_looking(tokenizer, id);
        }
        if (FIM_KINDS[k].ends) { tokenizer_add_end(tokenizer, id); }
    }
    for (size_t k = 0; k < sizeof(END_TEXTS) / sizeof(END_TEXTS[0]); k++) {
        int id = tokenizer_lookup(tokenizer, END_TEXTS[k], strlen(END_TEXTS[k]));
        tokenizer_add_end(tokenizer, id);
        tokenizer_control_looking(tokenizer, id);
    }
    return 0;
}

int tokenizer_is_end(const Tokenizer* tokenizer, int token) {
    if (token == tokenizer->eos_id) { return token >= 0; }
    for (int i = 0; i < tokenizer->n_end_ids; i++) { if (tokenizer->end_ids[i] == token) { return 1; } }
    return 0;
}

int tokenizer_load_gguf(Tokenizer* tokenizer, const GGUFFile* gguf, Error* err) {
    memset(tokenizer, 0, sizeof(*tokenizer));
    const char* path = gguf->path != NULL ? gguf->path : "(gguf)";
    char* text = NULL;

    // model and pre-tokenizer
    if (gguf_get_string(gguf, "tokenizer.ggml.model", &text, err) != 0) { return -1; }
    if (strcmp(text, "gpt2") != 0) {
        error_set(err, "%s: tokenizer.ggml.model is \"%s\"; only \"gpt2\" (byte-level BPE) is supported", path, text);
        free(text);
        return -1;
    }
    free(text);
    // llama.cpp's "default" pre-tokenizer (also what it uses when the key is absent) is a different split
    // (punctuation runs, digits in threes) that we do not implement: refuse it rather than tokenize wrongly
    if (gguf_find(gguf, "tokenizer.ggml.pre") == NULL) {
        return error_set(err, "%s: required key 'tokenizer.ggml.pre' is missing; supported pre-tokenizers: "
                         "\"smollm\", \"gpt-2\" (alias \"gpt2\")", path);
    }
    if (gguf_get_string(gguf, "tokenizer.ggml.pre", &text, err) != 0) { return -1; }
    if (strcmp(text, "smollm") == 0) { tokenizer->pre_tokenizer = PRE_TOKENIZER_SMOLLM; }
    else if (strcmp(text, "gpt2") == 0 || strcmp(text, "gpt-2") == 0) { tokenizer->pre_tokenizer = PRE_TOKENIZER_GPT2; }
    else {
        error_set(err, "%s: tokenizer.ggml.pre is \"%s\"; supported pre-tokenizers: \"smollm\", \"gpt-2\" "
                  "(alias \"gpt2\")", path, text);
        free(text);
        return -1;
    }
    free(text);

    // tokens and their types
    uint64_t n_tokens = 0;
    if (gguf_get_string_array(gguf, "tokenizer.ggml.tokens", &tokenizer->tokens, &n_tokens, err) != 0) {
        tokenizer->tokens = NULL;
        return -1;
    }
    if (n_tokens == 0 || n_tokens > (uint64_t)INT32_MAX) {
        if (tokenizer->tokens != NULL) { free_string_array(tokenizer->tokens, n_tokens); tokenizer->tokens = NULL; }
        return error_set(err, "%s: tokenizer.ggml.tokens has %llu entries; expected 1 to 2^31-1", path, (unsigned long long)n_tokens);
    }
    int V = (int)n_tokens;
    tokenizer->vocab_size = V;
    tokenizer->token_types = (int*)mallocCheck((size_t)V * sizeof(int));
    tokenizer->token_bytes = (char**)callocCheck((size_t)V, sizeof(char*));
    tokenizer->token_bytes_length = (int*)callocCheck((size_t)V, sizeof(int));
    TokenizerLookup* lookup = (TokenizerLookup*)callocCheck(1, sizeof(TokenizerLookup));
    tokenizer->token_lookup = lookup;
    for (int i = 0; i < V; i++) { tokenizer->token_types[i] = TOKEN_NORMAL; }
    if (gguf_find(gguf, "tokenizer.ggml.token_type") != NULL) {
        int32_t* types = NULL;
        uint64_t n_types = 0;
        if (gguf_get_int_array(gguf, "tokenizer.ggml.token_type", &types, &n_types, err) != 0) { goto fail; }
        if (n_types != n_tokens) {
            free(types);
            error_set(err, "%s: tokenizer.ggml.token_type has %llu entries but tokenizer.ggml.tokens has %d",
                      path, (unsigned long long)n_types, V);
            goto fail;
        }
        for (int i = 0; i < V; i++) {
            if (types[i] < TOKEN_NORMAL || types[i] > TOKEN_BYTE) {
                error_set(err, "%s: tokenizer.ggml.token_type[%d] = %d; expected 1 (normal) to 6 (byte)", path, i, (int)types[i]);
                free(types);
                goto fail;
            }
            tokenizer->token_types[i] = types[i];
        }
        free(types);
    }

    // text -> id map, raw bytes of each token, the byte tokens, the special tokens
    lookup->capacity = tokenizer_table_capacity((uint64_t)V);
    lookup->seed = tokenizer_hash_seed();
    lookup->slots = (int*)mallocCheck(lookup->capacity * sizeof(int));
    for (uint64_t i = 0; i < lookup->capacity; i++) { lookup->slots[i] = -1; }
    lookup->token_length = (int*)mallocCheck((size_t)V * sizeof(int));
    lookup->special_ids = (int*)mallocCheck((size_t)V * sizeof(int));
    for (int i = 0; i < V; i++) {
        size_t length = strlen(tokenizer->tokens[i]);
        if (length == 0 || length > (size_t)INT32_MAX / 2) {
            error_set(err, "%s: tokenizer.ggml.tokens[%d] is empty (or absurdly long)", path, i);
            goto fail;
        }
        lookup->token_length[i] = (int)length;
        int duplicate = tokenizer_lookup_insert(tokenizer, i);
        if (duplicate >= 0) {
            error_set(err, "%s: tokenizer.ggml.tokens[%d] = \"%s\" duplicates token %d", path, i, tokenizer->tokens[i], duplicate);
            goto fail;
        }
        if (tokenizer_make_token_bytes(tokenizer, i, path, err) != 0) { goto fail; }
        int type = tokenizer->token_types[i];
        if (type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED || type == TOKEN_UNKNOWN) {
            lookup->special_ids[lookup->n_special++] = i;
        }
    }
    tokenizer_sort_context = tokenizer;
    qsort(lookup->special_ids, (size_t)lookup->n_special, sizeof(int), tokenizer_compare_special);
    for (int b = 0; b < 256; b++) {
        char utf8[4];
        int n = utf8_encode((uint32_t)utf8_byte_to_codepoint(b), utf8);
        int id = tokenizer_lookup(tokenizer, utf8, (size_t)n);
        int type = id >= 0 ? tokenizer->token_types[id] : 0;
        int usable = id >= 0 && type != TOKEN_CONTROL && type != TOKEN_USER_DEFINED && type != TOKEN_UNKNOWN;
        lookup->byte_token[b] = usable ? id : -1;   // missing (SmolLM2 lacks 21 bytes) or special: dropped by encode
    }

    // merges, special ids, flags
    if (tokenizer_load_merges(tokenizer, gguf, err) != 0) { goto fail; }
    // a "gpt2" vocabulary's defaults where the file names none, as llama.cpp's (llama-vocab.cpp: 11 for both)
    tokenizer->bos_id = tokenizer->eos_id = V > TOKENIZER_GPT2_DEFAULT_ID ? TOKENIZER_GPT2_DEFAULT_ID : -1;
    if (tokenizer_optional_id(gguf, "tokenizer.ggml.bos_token_id", V, &tokenizer->bos_id, err) != 0) { goto fail; }
    if (tokenizer_optional_id(gguf, "tokenizer.ggml.eos_token_id", V, &tokenizer->eos_id, err) != 0) { goto fail; }
    if (tokenizer_find_ends(tokenizer, gguf, err) != 0) { goto fail; }   // (and the control-looking tokens)
    tokenizer->add_bos = tokenizer->add_eos = 0;
    if (gguf_find(gguf, "tokenizer.ggml.add_bos_token") != NULL &&
        gguf_get_bool(gguf, "tokenizer.ggml.add_bos_token", &tokenizer->add_bos, err) != 0) { goto fail; }
    if (gguf_find(gguf, "tokenizer.ggml.add_eos_token") != NULL &&
        gguf_get_bool(gguf, "tokenizer.ggml.add_eos_token", &tokenizer->add_eos, err) != 0) { goto fail; }
    return 0;
fail:
    tokenizer_free(tokenizer);
    return -1;
}

// ----------------------------------------------------------------------------
// a tiny byte-level BPE vocabulary for project-made test models

// Training text: a little English prose and a little C and Python, so merges cover both.
static const char* TOKENIZER_TINY_SAMPLE =
    "The quick brown fox jumps over the lazy dog. A model that guesses the next token well is a model that "
    "has learned something about the world. Speculative decoding lets a small draft model propose several "
    "tokens, and the large target model checks them all in one forward pass. When the draft is right, we "
    "get many tokens for the price of one; when it is wrong, we lose little. The draft learns online from "
    "the requests it serves, so it keeps getting better at guessing what the target would say.\n"
    "Once upon a time, there was a little girl who loved to read books. She read in the morning and in the "
    "evening, and she told her friends about the stories she liked the most. I'm sure you'll like them too; "
    "they're short, and we've read them twice. It's 10:30 on 2024-05-17, and 3 + 4 = 7.\n"
    "int main(int argc, char** argv) {\n"
    "    for (int i = 0; i < argc; i++) {\n"
    "        printf(\"%d: %s\\n\", i, argv[i]);\n"
    "    }\n"
    "    return 0;\n"
    "}\n"
    "static float dot(const float* a, const float* b, int n) {\n"
    "    float sum = 0.0f;\n"
    "    for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }\n"
    "    return sum;\n"
    "}\n"
    "def tokenize(text):\n"
    "    words = text.split()\n"
    "    return [word.lower() for word in words if word]\n"
    "\n"
    "class Model:\n"
    "    def __init__(self, vocab_size=512, dim=64):\n"
    "        self.vocab_size = vocab_size\n"
    "        self.dim = dim\n";

static int tokenizer_compare_u64(const void* a, const void* b) {
    uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
    return x < y ? -1 : x > y;
}

void gguf_writer_add_tiny_tokenizer(GGUFWriter* writer, int vocab_size) {
    if (vocab_size < 259) {
        fprintf(stderr, "gguf_writer_add_tiny_tokenizer: vocab_size %d < 259 (3 control + 256 byte tokens)\n", vocab_size);
        exit(EXIT_FAILURE);
    }
    char** tokens = (char**)callocCheck((size_t)vocab_size, sizeof(char*));
    int32_t* types = (int32_t*)mallocCheck((size_t)vocab_size * sizeof(int32_t));
    char** merges = (char**)callocCheck((size_t)vocab_size, sizeof(char*));
    int n_merges = 0;
    static const char* controls[3] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++) {
        tokens[i] = (char*)mallocCheck(strlen(controls[i]) + 1);
        strcpy(tokens[i], controls[i]);
        types[i] = TOKEN_CONTROL;
    }
    for (int b = 0; b < 256; b++) {   // token 3 + b is byte b
        tokens[3 + b] = (char*)callocCheck(4, 1);
        utf8_encode((uint32_t)utf8_byte_to_codepoint(b), tokens[3 + b]);
        types[3 + b] = TOKEN_NORMAL;
    }
    int n_tokens = 259;

    // words: the sample's GPT-2 pre-tokens as sequences of token ids (-1 ends a word)
    size_t sample_length = strlen(TOKENIZER_TINY_SAMPLE);
    TokenizerChar* chars;
    size_t n_chars = tokenizer_decode_chars(TOKENIZER_TINY_SAMPLE, sample_length, &chars);
    TokenizerPieces pieces = {0};
    tokenizer_split_gpt2(chars, 0, n_chars, &pieces);
    int* words = (int*)mallocCheck((sample_length + pieces.count) * sizeof(int));
    size_t n_words_total = 0, piece_start = 0;
    for (size_t p = 0; p < pieces.count; p++) {
        size_t begin = chars[piece_start].start, end = chars[pieces.ends[p] - 1].start + (size_t)chars[pieces.ends[p] - 1].length;
        for (size_t i = begin; i < end; i++) { words[n_words_total++] = 3 + (uint8_t)TOKENIZER_TINY_SAMPLE[i]; }
        words[n_words_total++] = -1;
        piece_start = pieces.ends[p];
    }
    free(chars); free(pieces.ends);
    uint64_t* pairs = (uint64_t*)mallocCheck(n_words_total * sizeof(uint64_t));

    // learn merges: the most frequent adjacent pair (ties: smallest ids) becomes a new token
    while (n_tokens < vocab_size) {
        size_t n_pairs = 0;
        for (size_t i = 0; i + 1 < n_words_total; i++) {
            if (words[i] >= 0 && words[i + 1] >= 0) { pairs[n_pairs++] = bpe_pair_key(words[i], words[i + 1]); }
        }
        if (n_pairs == 0) { break; }
        qsort(pairs, n_pairs, sizeof(uint64_t), tokenizer_compare_u64);
        uint64_t best = pairs[0];
        size_t best_count = 0;
        for (size_t i = 0; i < n_pairs;) {
            size_t j = i;
            while (j < n_pairs && pairs[j] == pairs[i]) { j++; }
            if (j - i > best_count) { best_count = j - i; best = pairs[i]; }
            i = j;
        }
        int left = (int)(best >> 32), right = (int)(best & 0xFFFFFFFFu);
        size_t left_length = strlen(tokens[left]), right_length = strlen(tokens[right]);
        char* joined = (char*)mallocCheck(left_length + right_length + 1);
        memcpy(joined, tokens[left], left_length);
        memcpy(joined + left_length, tokens[right], right_length + 1);
        int merged = n_tokens;   // ("ab", "c") and ("a", "bc") both make "abc": reuse the token
        for (int i = 0; i < n_tokens; i++) {
            if (strcmp(tokens[i], joined) == 0) { merged = i; break; }
        }
        if (merged == n_tokens) { tokens[n_tokens] = joined; types[n_tokens] = TOKEN_NORMAL; n_tokens++; }
        else { free(joined); }
        merges[n_merges] = (char*)mallocCheck(left_length + right_length + 2);
        memcpy(merges[n_merges], tokens[left], left_length);
        merges[n_merges][left_length] = ' ';
        memcpy(merges[n_merges] + left_length + 1, tokens[right], right_length + 1);
        n_merges++;
        size_t out = 0;   // replace every (left, right) in place, left to right
        for (size_t i = 0; i < n_words_total; i++) {
            if (i + 1 < n_words_total && words[i] == left && words[i + 1] == right) { words[out++] = merged; i++; }
            else { words[out++] = words[i]; }
        }
        n_words_total = out;
    }
    // the sample ran out of pairs: fill up with unused tokens
    for (int i = 0; n_tokens < vocab_size; i++, n_tokens++) {
        char name[32];
        snprintf(name, sizeof(name), "<|unused_%d|>", i);
        tokens[n_tokens] = (char*)mallocCheck(strlen(name) + 1);
        strcpy(tokens[n_tokens], name);
        types[n_tokens] = TOKEN_UNUSED;
    }
    free(words); free(pairs);

    gguf_writer_add_string(writer, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_string(writer, "tokenizer.ggml.pre", "gpt-2");   // llama.cpp's name for the plain GPT-2 split
    gguf_writer_add_string_array(writer, "tokenizer.ggml.tokens", (const char* const*)tokens, (uint64_t)vocab_size);
    gguf_writer_add_array(writer, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)vocab_size);
    gguf_writer_add_string_array(writer, "tokenizer.ggml.merges", (const char* const*)merges, (uint64_t)n_merges);
    gguf_writer_add_uint32(writer, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_add_uint32(writer, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_add_bool(writer, "tokenizer.ggml.add_bos_token", 0);
    for (int i = 0; i < vocab_size; i++) { free(tokens[i]); }
    for (int i = 0; i < n_merges; i++) { free(merges[i]); }
    free(tokens); free(types); free(merges);
}
