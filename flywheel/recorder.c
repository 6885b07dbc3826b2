/*
recorder.c: what the inference side hands the trainer, and the two things serving and training share:
the bounded record buffer and the weight exchange (a double buffer of draft weights).

Per finished request (a Record): the tokens, the target's taps g_t and final hidden states h_t at every
committed position (the trainer recomputes the target's distributions from h_t with the frozen LM head),
in fp16, the prompt length and the draft version that served it; and, when the discard loss will read
them, for every verify pass each rejected tree node with its token, its parent's taps and its own target
hidden state.

The RecordBuffer is the only thing serving and training share besides the weight double buffer
(WeightExchange, below). Serving pushes and never waits: when the buffer is full the oldest record is
dropped and counted. Training pops, waiting when it is empty.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include "aurora.h"

Record* record_new(int dim, int keep_discard) {
    Record* record = callocCheck(1, sizeof(Record));
    record->dim = dim;
    record->keep_discard = keep_discard;
    return record;
}

void record_rows_f32(float* out, const uint16_t* rows, int n_rows, int width) {
    dequantize_row(RECORD_TYPE, rows, out, (int64_t)n_rows * width);
}

void record_rows_store(uint16_t* rows, const float* values, int n_rows, int width) {
    const float largest = 65504.0f;   // fp16's largest finite value
    for (size_t i = 0; i < (size_t)n_rows * width; i++) {
        float x = values[i];
        // a finite value past fp16's range is clamped; an infinity stays one (as a NaN does: it fails both
        // comparisons), so a step on it is rejected as non-finite rather than trained on a finite 65504
        rows[i] = fp32_to_fp16(isinf(x) ? x : x > largest ? largest : x < -largest ? -largest : x);
    }
}

size_t record_state_bytes(int n_positions, int dim) {
    return (size_t)n_positions * (TAP_LAYERS + 1) * (size_t)dim * sizeof(uint16_t);
}

size_t record_bytes(const Record* record) {
    return sizeof(Record) + (size_t)record->n_tokens * sizeof(int)
         + record_state_bytes(record->n_committed, record->dim)
         + (size_t)record->discard_capacity * sizeof(DiscardNode) + record_state_bytes(record->discard_capacity, record->dim);
}

void record_free(Record* record) {
    if (record == NULL) { return; }
    free(record->tokens);
    if (!record->spilled) { free(record->features); free(record->hidden); }   // (else the spill's mapping's)
    free(record->discard);
    free(record->discard_features);
    free(record->discard_hidden);
    free(record);
}

static void record_reserve_discard(Record* record, int needed) {
    if (needed <= record->discard_capacity) { return; }
    int capacity = record->discard_capacity ? record->discard_capacity : 64;
    while (capacity < needed) { capacity *= 2; }
    size_t C = (size_t)record->dim;
    record->discard = realloc(record->discard, (size_t)capacity * sizeof(DiscardNode));
    record->discard_features = realloc(record->discard_features, (size_t)capacity * TAP_LAYERS * C * sizeof(uint16_t));
    record->discard_hidden = realloc(record->discard_hidden, (size_t)capacity * C * sizeof(uint16_t));
    if (!record->discard || !record->discard_features || !record->discard_hidden) {
        fprintf(stderr, "error: out of memory recording rejected nodes\n");
        exit(EXIT_FAILURE);
    }
    record->discard_capacity = capacity;
}

void record_add_verify_step(Record* record, const Tree* tree, const Acceptance* acceptance, const float* features,
                            const float* hidden, int verify_step) {
    if (!record->keep_discard) { return; }
    int N = tree->n_nodes, C = record->dim;
    uint8_t accepted[TREE_MAX_NODES] = {0};
    for (int i = 0; i <= acceptance->n_accepted; i++) { accepted[acceptance->path[i]] = 1; }
    int discard_index[TREE_MAX_NODES]; // tree node -> index among the record's discard nodes
    record_reserve_discard(record, record->n_discard + N);
    for (int i = 1; i < N; i++) { // parents come before children, so a rejected parent is already recorded
        if (accepted[i]) { continue; }
        int parent = tree->parents[i];
        int n_accepted_ancestors = 0;
        for (int a = parent; a > 0; a = tree->parents[a]) { n_accepted_ancestors += accepted[a]; }
        DiscardNode* node = &record->discard[record->n_discard];
        node->token = tree->tokens[i];
        node->position = tree->positions[i];
        node->parent = accepted[parent] ? -1 : discard_index[parent];
        node->prefix_end = tree->root_position + n_accepted_ancestors;
        node->verify_step = verify_step;
        node->score = tree->scores[i];
        record_rows_store(record->discard_features + (size_t)record->n_discard * TAP_LAYERS * C,
                          features + (size_t)parent * TAP_LAYERS * C, 1, TAP_LAYERS * C);
        record_rows_store(record->discard_hidden + (size_t)record->n_discard * C, hidden + (size_t)i * C, 1, C);
        discard_index[i] = record->n_discard++;
    }
}

void record_finish(Record* record, const int* tokens, int n_tokens, int n_committed, int n_prompt,
                   const float* features, const float* hidden, int draft_version) {
    size_t C = (size_t)record->dim;
    // a last verify pass that ran past max_new committed positions whose tokens were cut: keep the
    // positions that have a next token (before this clamp such a record had nothing to train on)
    if (n_committed > n_tokens - 1) { n_committed = n_tokens - 1; }
    record->n_tokens = n_tokens;
    record->n_committed = n_committed;
    record->n_prompt = n_prompt;
    record->draft_version = draft_version;
    record->tokens = mallocCheck((size_t)n_tokens * sizeof(int));
    memcpy(record->tokens, tokens, (size_t)n_tokens * sizeof(int));
    record->features = mallocCheck((size_t)n_committed * TAP_LAYERS * C * sizeof(uint16_t));
    record_rows_store(record->features, features, n_committed, TAP_LAYERS * (int)C);
    record->hidden = mallocCheck((size_t)n_committed * C * sizeof(uint16_t));
    record_rows_store(record->hidden, hidden, n_committed, (int)C);
}

// ----------------------------------------------------------------------------
// records in a file (RecordSpill, aurora.h)

int record_spill_open(RecordSpill* spill, const char* path, Error* err) {
    memset(spill, 0, sizeof(*spill));
    spill->fd = -1;
    // created new, never through a link (as output_open's temporary file); a leftover of the name removed
    const int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(path, flags, 0600);
    if (fd < 0 && errno == EEXIST && unlink(path) == 0) { fd = open(path, flags, 0600); }
    if (fd < 0) { return error_set(err, "%s: cannot create the file that holds the records: %s", path, strerror(errno)); }
    if (unlink(path) != 0) {
        int e = errno;
        close(fd);
        return error_set(err, "%s: cannot remove the name of the file that holds the records: %s", path, strerror(e));
    }
    // a filesystem that cannot map a file (some FUSE and 9p mounts) fails here rather than after the recording
    void* probe = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (probe == MAP_FAILED) {
        int e = errno;
        close(fd);
        return error_set(err, "%s: the file that holds the records cannot be memory-mapped there: %s (expected -o on a "
                         "local disk)", path, strerror(e));
    }
    munmap(probe, 4096);
    spill->fd = fd;
    spill->path = mallocCheck(strlen(path) + 1);
    strcpy(spill->path, path);
    return 0;
}

// Writes n bytes at the end of the file; -1 with the spill's error on failure (a full disk, a file-size limit).
static int record_spill_append(RecordSpill* spill, const void* bytes, size_t n) {
    const uint8_t* at = bytes;
    while (n > 0) {
        ssize_t written = write(spill->fd, at, n);
        if (written < 0 && errno == EINTR) { continue; }
        if (written <= 0) {
            spill->failed = 1;
            error_set(&spill->err, "%s: cannot write the records (%.1f MB so far; the file's name was removed when it "
                      "was made): %s; expected free space beside -o, about 1.2 MB a sample at --max-new 64", spill->path,
                      spill->bytes / 1048576.0, written < 0 ? strerror(errno) : "no progress");
            return -1;
        }
        at += written;
        n -= (size_t)written;
        spill->bytes += (size_t)written;
    }
    return 0;
}

int record_spill_write(RecordSpill* spill, Record* record) {
    if (spill->failed || spill->map != NULL) { return -1; }   // (after a failure the rest stay in memory)
    size_t offset = spill->bytes, states = record_state_bytes(record->n_committed, record->dim);
    size_t hidden = (size_t)record->n_committed * record->dim * sizeof(uint16_t), features = states - hidden;
    if (record_spill_append(spill, record->features, features) != 0 ||
        record_spill_append(spill, record->hidden, hidden) != 0) {
        return -1;
    }
    free(record->features);
    free(record->hidden);
    record->features = record->hidden = NULL;
    record->spilled = 1;
    record->spill_offset = offset;
    return 0;
}

int record_spill_map(RecordSpill* spill, Record** records, int n_records, Error* err) {
    if (spill->failed) { *err = spill->err; return -1; }
    // on the disk before it is read back: a write that fails only there (NFS, a thin volume) is an error now, not a
    // mapping that reads stale bytes or faults later
    if (spill->bytes > 0 && fdatasync(spill->fd) != 0 && errno != EINVAL) {
        spill->failed = 1;
        error_set(&spill->err, "%s: cannot write the records (%.1f MB): %s", spill->path, spill->bytes / 1048576.0,
                  strerror(errno));
        *err = spill->err;
        return -1;
    }
    if (spill->bytes > 0) {
        void* map = mmap(NULL, spill->bytes, PROT_READ, MAP_SHARED, spill->fd, 0);
        if (map == MAP_FAILED) {
            return error_set(err, "%s: cannot map the records' file (%.1f MB): %s", spill->path, spill->bytes / 1048576.0,
                             strerror(errno));
        }
        spill->map = map;
    }
    if (spill->map == NULL) { return 0; }   // (every spilled record empty: nothing to point at)
    // (the mapping is read-only: the trainer only reads a record's states)
    for (int i = 0; i < n_records; i++) {
        Record* record = records[i];
        if (!record->spilled) { continue; }
        size_t C = (size_t)record->dim;
        record->features = (uint16_t*)((uint8_t*)spill->map + record->spill_offset);
        record->hidden = record->features + (size_t)record->n_committed * TAP_LAYERS * C;
    }
    return 0;
}

void record_spill_close(RecordSpill* spill) {
    if (spill->map != NULL) { munmap(spill->map, spill->bytes); }
    if (spill->fd >= 0) { close(spill->fd); }
    free(spill->path);
    memset(spill, 0, sizeof(*spill));
    spill->fd = -1;
}

// ----------------------------------------------------------------------------
// the ring buffer

struct RecordBuffer {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    int capacity;
    int head;           // index of the oldest record
    int count;
    Record** items;     // (capacity)
    long pushed, dropped;
    int closed;
};

RecordBuffer* record_buffer_new(int capacity) {
    RecordBuffer* buffer = callocCheck(1, sizeof(RecordBuffer));
    pthread_mutex_init(&buffer->lock, NULL);
    pthread_cond_init(&buffer->not_empty, NULL);
    buffer->capacity = capacity < 1 ? 1 : capacity;
    buffer->items = callocCheck((size_t)buffer->capacity, sizeof(Record*));
    return buffer;
}

void record_buffer_free(RecordBuffer* buffer) {
    for (int i = 0; i < buffer->count; i++) { record_free(buffer->items[(buffer->head + i) % buffer->capacity]); }
    pthread_mutex_destroy(&buffer->lock);
    pthread_cond_destroy(&buffer->not_empty);
    free(buffer->items);
    free(buffer);
}

void record_buffer_push(RecordBuffer* buffer, Record* record) {
    Record* evicted = NULL;
    pthread_mutex_lock(&buffer->lock);
    if (buffer->count == buffer->capacity) { // full: drop the oldest
        evicted = buffer->items[buffer->head];
        buffer->head = (buffer->head + 1) % buffer->capacity;
        buffer->count--;
        buffer->dropped++;
    }
    buffer->items[(buffer->head + buffer->count) % buffer->capacity] = record;
    buffer->count++;
    buffer->pushed++;
    pthread_cond_signal(&buffer->not_empty);
    pthread_mutex_unlock(&buffer->lock);
    record_free(evicted); // outside the lock: serving holds it only for pointer moves
}

int record_buffer_pop(RecordBuffer* buffer, Record** out, int max, int wait) {
    pthread_mutex_lock(&buffer->lock);
    while (wait && buffer->count == 0 && !buffer->closed) { pthread_cond_wait(&buffer->not_empty, &buffer->lock); }
    int n = buffer->count < max ? buffer->count : max;
    for (int i = 0; i < n; i++) {
        out[i] = buffer->items[buffer->head];
        buffer->head = (buffer->head + 1) % buffer->capacity;
    }
    buffer->count -= n;
    pthread_mutex_unlock(&buffer->lock);
    return n;
}

void record_buffer_close(RecordBuffer* buffer) {
    pthread_mutex_lock(&buffer->lock);
    buffer->closed = 1;
    pthread_cond_broadcast(&buffer->not_empty);
    pthread_mutex_unlock(&buffer->lock);
}

void record_buffer_counts(RecordBuffer* buffer, long* pushed, long* dropped, int* depth) {
    pthread_mutex_lock(&buffer->lock);
    if (pushed) { *pushed = buffer->pushed; }
    if (dropped) { *dropped = buffer->dropped; }
    if (depth) { *depth = buffer->count; }
    pthread_mutex_unlock(&buffer->lock);
}

// ----------------------------------------------------------------------------
// the weight exchange: a double buffer of draft weights with a version number
//
// The trainer writes only into the buffer that is not being served, so the server never reads a
// half-written buffer and never waits: it takes the newest published buffer between verify passes (a
// pointer swap). A publish while the previous one still waits to be taken rewrites that buffer (the older
// version is superseded, counted): the server can take nothing while the copy runs, and then takes the
// newest. (It once skipped such a publish instead, and where nothing takes a version for a while, training
// in the gaps between requests or a lockstep round of requests without a verify pass, the server then
// got the weights of the round's or the gap's first publish rather than its last.)

struct WeightExchange {
    pthread_mutex_t lock;   // held only for index updates, never during a copy
    float* buffers[2];      // (n) each
    int32_t* vocabularies[2]; // (n_ids) each: the draft vocabulary (d2t) the weights of the same buffer go with
    size_t n;
    int n_ids;
    int published;          // index of the newest published buffer, -1: none yet
    int published_version;
    int serving;            // index the server reads, -1: still its initial weights
    int writing;            // a publish is copying into the buffer not served: take hands out nothing
    long superseded;        // publishes rewritten before the server took them
};

WeightExchange* weight_exchange_new(size_t n, int n_ids) {
    WeightExchange* exchange = callocCheck(1, sizeof(WeightExchange));
    pthread_mutex_init(&exchange->lock, NULL);
    for (int i = 0; i < 2; i++) {
        exchange->buffers[i] = mallocCheck(n * sizeof(float));
        exchange->vocabularies[i] = mallocCheck((size_t)n_ids * sizeof(int32_t));
    }
    exchange->n = n;
    exchange->n_ids = n_ids;
    exchange->published = -1;
    exchange->serving = -1;
    return exchange;
}

void weight_exchange_free(WeightExchange* exchange) {
    pthread_mutex_destroy(&exchange->lock);
    for (int i = 0; i < 2; i++) {
        free(exchange->buffers[i]);
        free(exchange->vocabularies[i]);
    }
    free(exchange);
}

int weight_exchange_publish(WeightExchange* exchange, const float* weights, const int32_t* vocabulary) {
    pthread_mutex_lock(&exchange->lock);
    int target = exchange->serving == 0 ? 1 : 0;   // not served: free, or holding a version not taken yet
    if (exchange->published == target) { exchange->superseded++; }
    exchange->writing = 1;
    pthread_mutex_unlock(&exchange->lock);
    memcpy(exchange->buffers[target], weights, exchange->n * sizeof(float)); // nobody reads this buffer now
    memcpy(exchange->vocabularies[target], vocabulary, (size_t)exchange->n_ids * sizeof(int32_t));
    pthread_mutex_lock(&exchange->lock);
    exchange->published = target;
    exchange->writing = 0;
    int version = ++exchange->published_version;
    pthread_mutex_unlock(&exchange->lock);
    return version;
}

float* weight_exchange_take(WeightExchange* exchange, int current_version, int* version, const int32_t** vocabulary) {
    float* weights = NULL;
    pthread_mutex_lock(&exchange->lock);
    if (!exchange->writing && exchange->published >= 0 && exchange->published_version != current_version) {
        exchange->serving = exchange->published;
        weights = exchange->buffers[exchange->serving];
        *vocabulary = exchange->vocabularies[exchange->serving];
        *version = exchange->published_version;
    }
    pthread_mutex_unlock(&exchange->lock);
    return weights;
}

long weight_exchange_superseded(WeightExchange* exchange) {
    pthread_mutex_lock(&exchange->lock);
    long superseded = exchange->superseded;
    pthread_mutex_unlock(&exchange->lock);
    return superseded;
}
