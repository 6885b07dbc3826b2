/*
traffic.c: request traffic from JSONL files, for replaying a stream of requests through the server.

Contract:
  - traffic_load reads every non-empty line of a JSONL file. Each line is one JSON object (strict JSON:
    RFC 8259, UTF-8; strings may hold every escape, \uXXXX included, surrogate pairs become one UTF-8
    character). The prompt is the string field "prompt", else "text", else ShareGPT-style
    "conversations" (an array of {"from": ..., "value": ...} turns): then the first "human" or "user"
    turn's value is the prompt and the request is marked chat (the caller applies the chat template).
    "domain" is an optional bare word (letters, digits, - _ . / +; default "default"). Every other
    field is parsed (so it must be valid JSON) and ignored.
  - Errors never exit: they name the file, the line, the column (in bytes, from 1) and what was
    expected, e.g. "traffic/x.jsonl:7:23: expected ',' or '}' after an object member, found 'x'".
    On error nothing needs freeing.
  - traffic_order: "mixed" shuffles (Fisher-Yates with the project's seeded generator, so a seed gives
    one order on every machine); "ordered" groups by domain in order of first appearance, keeping the
    file order within a domain. traffic_select_domain keeps the requests of one domain.
  - Every request's domain points at one of traffic->domains (not separately allocated).
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// traffic

// A domain names runs, files and chart labels: letters, digits and - _ . / + only.
static int traffic_domain_is_bare_word(const char* s) {
    if (s[0] == '\0') { return 0; }
    for (const char* c = s; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == '.' || *c == '/' || *c == '+')) { return 0; }
    }
    return 1;
}

// The index of domain in traffic->domains (-1: absent).
static int traffic_domain_index(const Traffic* traffic, const char* domain) {
    for (int i = 0; i < traffic->n_domains; i++) {
        if (strcmp(traffic->domains[i], domain) == 0) { return i; }
    }
    return -1;
}

// The index of domain in traffic->domains, adding it (a copy) if new; -1 if that would make more than
// TRAFFIC_MAX_DOMAINS (each line searches the domains: 200,000 of them took two minutes).
static int traffic_intern_domain(Traffic* traffic, const char* domain, int* capacity) {
    int known = traffic_domain_index(traffic, domain);
    if (known >= 0) { return known; }
    if (traffic->n_domains == TRAFFIC_MAX_DOMAINS) { return -1; }
    if (traffic->n_domains == *capacity) {
        *capacity = *capacity ? *capacity * 2 : 8;
        char** grown = mallocCheck((size_t)*capacity * sizeof(char*));
        if (traffic->n_domains > 0) { memcpy(grown, traffic->domains, (size_t)traffic->n_domains * sizeof(char*)); }
        free(traffic->domains);
        traffic->domains = grown;
    }
    traffic->domains[traffic->n_domains] = string_copy(domain);
    return traffic->n_domains++;
}

// A string member's value; 0 if absent, -1 (error) if present but not a string.
static int traffic_string_field(const JsonValue* object, const char* key, const char** out, const char* path,
                                int line, Error* err) {
    const JsonValue* v = json_get(object, key);
    *out = NULL;
    if (v == NULL) { return 0; }
    if (v->type != JSON_STRING) {
        return error_set(err, "%s:%d:%d: field \"%s\" must be a string, found %s", path, line, v->column, key,
                         json_type_name(v->type));
    }
    *out = v->string;
    return 0;
}

// Finds the prompt of one parsed line: "prompt", "text", or the first human/user turn of "conversations".
static int traffic_request_prompt(const JsonValue* object, const char** prompt, int* chat, const char* path,
                                  int line, Error* err) {
    *chat = 0;
    if (traffic_string_field(object, "prompt", prompt, path, line, err) != 0) { return -1; }
    if (*prompt == NULL && traffic_string_field(object, "text", prompt, path, line, err) != 0) { return -1; }
    if (*prompt != NULL) { return 0; }
    const JsonValue* conversation = json_get(object, "conversations");
    if (conversation == NULL) {
        return error_set(err, "%s:%d: no prompt: expected a string field \"prompt\" or \"text\", or a "
                         "\"conversations\" array of {\"from\", \"value\"} turns", path, line);
    }
    if (conversation->type != JSON_ARRAY) {
        return error_set(err, "%s:%d:%d: field \"conversations\" must be an array of turns, found %s", path, line,
                         conversation->column, json_type_name(conversation->type));
    }
    for (int i = 0; i < conversation->n; i++) {
        const JsonValue* turn = &conversation->items[i];
        if (turn->type != JSON_OBJECT) {
            return error_set(err, "%s:%d:%d: conversations[%d] must be an object {\"from\", \"value\"}, found %s", path,
                             line, turn->column, i, json_type_name(turn->type));
        }
        const char *from, *value;
        if (traffic_string_field(turn, "from", &from, path, line, err) != 0) { return -1; }
        if (traffic_string_field(turn, "value", &value, path, line, err) != 0) { return -1; }
        if (from == NULL || value == NULL) {
            return error_set(err, "%s:%d:%d: conversations[%d] needs string fields \"from\" and \"value\"", path, line,
                             turn->column, i);
        }
        if (strcmp(from, "human") == 0 || strcmp(from, "user") == 0) {
            *prompt = value;
            *chat = 1;
            return 0;
        }
    }
    return error_set(err, "%s:%d: no prompt: \"conversations\" has no turn from \"human\" or \"user\"", path, line);
}

void traffic_free(Traffic* traffic) {
    for (int i = 0; i < traffic->n_requests; i++) { free(traffic->requests[i].prompt); }
    for (int i = 0; i < traffic->n_domains; i++) { free(traffic->domains[i]); }
    free(traffic->requests);
    free(traffic->domains);
    free(traffic->path);
    memset(traffic, 0, sizeof(*traffic));
}

int traffic_load(Traffic* traffic, const char* path, Error* err) {
    memset(traffic, 0, sizeof(*traffic));
    char* text = NULL;
    size_t length = 0;
    if (read_text_file(path, TRAFFIC_MAX_BYTES, &text, &length, err) != 0) { return -1; }
    int status = traffic_parse(traffic, text, length, path, err);
    free(text);
    return status;
}

int traffic_parse(Traffic* traffic, const char* bytes, size_t n_bytes, const char* path, Error* err) {
    memset(traffic, 0, sizeof(*traffic));
    struct { const char* data; size_t length; } text = {bytes, n_bytes};

    int request_capacity = 0, domain_capacity = 0;
    size_t start = 0;
    if (text.length >= 3 && memcmp(text.data, "\xEF\xBB\xBF", 3) == 0) { start = 3; } // a UTF-8 byte-order mark
    int line = 0;
    while (start < text.length) {
        line++;
        const char* end = memchr(text.data + start, '\n', text.length - start);
        size_t length = end ? (size_t)(end - (text.data + start)) : text.length - start;
        const char* row = text.data + start;
        start += length + 1;
        if (length > 0 && row[length - 1] == '\r') { length--; }
        size_t blank = 0;
        while (blank < length && (row[blank] == ' ' || row[blank] == '\t')) { blank++; }
        if (blank == length) { continue; }   // empty lines are allowed anywhere

        JsonValue object;
        if (json_parse_line(row, length, path, line, &object, err) != 0) { goto fail; }
        const char *prompt, *domain;
        int chat;
        if (traffic_request_prompt(&object, &prompt, &chat, path, line, err) != 0 ||
            traffic_string_field(&object, "domain", &domain, path, line, err) != 0) {
            json_free(&object);
            goto fail;
        }
        if (domain == NULL) { domain = "default"; }
        if (!traffic_domain_is_bare_word(domain)) {
            char shown[72];
            error_set(err, "%s:%d:%d: domain \"%s\" must be a non-empty bare word (letters, digits, - _ . / +)",
                      path, line, json_get(&object, "domain")->column, printable_text(domain, shown, sizeof(shown)));
            json_free(&object);
            goto fail;
        }
        if (prompt[0] == '\0') {
            error_set(err, "%s:%d: the prompt is empty", path, line);
            json_free(&object);
            goto fail;
        }
        if (traffic->n_requests == request_capacity) {
            request_capacity = request_capacity ? request_capacity * 2 : 64;
            TrafficRequest* grown = mallocCheck((size_t)request_capacity * sizeof(TrafficRequest));
            if (traffic->n_requests > 0) { memcpy(grown, traffic->requests, (size_t)traffic->n_requests * sizeof(TrafficRequest)); }
            free(traffic->requests);
            traffic->requests = grown;
        }
        int d = traffic_intern_domain(traffic, domain, &domain_capacity);   // may grow traffic->domains
        if (d < 0) {
            error_set(err, "%s:%d: domain \"%.60s\" would be the file's domain number %d; expected at most %d (a domain "
                      "names a kind of traffic: code, chat, ...)", path, line, domain, TRAFFIC_MAX_DOMAINS + 1,
                      TRAFFIC_MAX_DOMAINS);
            json_free(&object);
            goto fail;
        }
        TrafficRequest* r = &traffic->requests[traffic->n_requests++];
        r->domain = traffic->domains[d];
        r->prompt = string_copy(prompt);
        r->chat = chat;
        r->line = line;
        json_free(&object);
    }
    if (traffic->n_requests == 0) {
        traffic_free(traffic);
        return error_set(err, "%s: no requests (expected one JSON object per line)", path);
    }
    traffic->path = string_copy(path);
    return 0;
fail:
    traffic_free(traffic);
    return -1;
}

void traffic_order(Traffic* traffic, const char* order, uint64_t seed) {
    int n = traffic->n_requests;
    if (strcmp(order, "mixed") == 0) {
        // Fisher-Yates: position i takes a uniform pick from [0, i]. (The modulo bias of random_u32 % (i+1)
        // is below n / 2^32: negligible for traffic files.)
        uint64_t state = random_seed_state(seed);
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(random_u32(&state) % (uint32_t)(i + 1));
            TrafficRequest t = traffic->requests[i];
            traffic->requests[i] = traffic->requests[j];
            traffic->requests[j] = t;
        }
    } else if (strcmp(order, "ordered") == 0) {
        // stable counting sort by domain index (domains are in order of first appearance)
        TrafficRequest* sorted = mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(TrafficRequest));
        int* index = mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(int));
        int* start = callocCheck((size_t)traffic->n_domains + 1, sizeof(int));
        for (int i = 0; i < n; i++) {
            index[i] = traffic_domain_index(traffic, traffic->requests[i].domain);
            if (index[i] < 0) { fprintf(stderr, "error: traffic_order: a request's domain is not in traffic->domains\n"); exit(EXIT_FAILURE); }
            start[index[i] + 1]++;
        }
        for (int d = 0; d < traffic->n_domains; d++) { start[d + 1] += start[d]; }
        for (int i = 0; i < n; i++) { sorted[start[index[i]]++] = traffic->requests[i]; }
        free(index);
        free(start);
        free(traffic->requests);
        traffic->requests = sorted;
    } else {
        // the command line validates --order; anything else here is a caller bug
        fprintf(stderr, "error: traffic_order: unknown order '%s' (expected mixed or ordered)\n", order);
        exit(EXIT_FAILURE);
    }
}

int traffic_chat_check(const Traffic* traffic, const Tokenizer* tokenizer, Error* err) {
    for (int i = 0; i < traffic->n_requests; i++) {
        if (!traffic->requests[i].chat) { continue; }
        if (prompt_chat_check(tokenizer, err) == 0) { return 0; }   // (the vocabulary, checked once)
        char reason[sizeof(err->message)];
        snprintf(reason, sizeof(reason), "%s", err->message);
        return error_set(err, "%s:%d: a chat turn (\"conversations\"): %s", traffic->path ? traffic->path : "the traffic",
                         traffic->requests[i].line, reason);
    }
    return 0;
}

int traffic_select_domain(Traffic* traffic, const char* domain, Error* err) {
    int d = traffic_domain_index(traffic, domain);
    if (d < 0) {
        char present[512] = "";
        for (int i = 0; i < traffic->n_domains; i++) {
            size_t used = strlen(present);
            snprintf(present + used, sizeof(present) - used, "%s%s", i ? ", " : "", traffic->domains[i]);
        }
        return error_set(err, "domain '%s' is not in the traffic; the domains present are: %s", domain, present);
    }
    int kept = 0;
    for (int i = 0; i < traffic->n_requests; i++) {
        TrafficRequest r = traffic->requests[i];
        if (strcmp(r.domain, domain) == 0) { traffic->requests[kept++] = r; }
        else { free(r.prompt); }
    }
    traffic->n_requests = kept;
    // keep only the selected domain's string; requests point at it
    char* keep = traffic->domains[d];
    for (int i = 0; i < traffic->n_domains; i++) {
        if (i != d) { free(traffic->domains[i]); }
    }
    traffic->domains[0] = keep;
    traffic->n_domains = 1;
    for (int i = 0; i < kept; i++) { traffic->requests[i].domain = keep; }
    return 0;
}
