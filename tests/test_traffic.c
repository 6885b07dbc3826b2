/*
test_traffic.c: the JSONL traffic reader (strict JSON: escapes, \uXXXX, surrogate pairs, nesting,
whitespace; malformed lines give file:line:column errors), the prompt / text / conversations variants,
the shipped traffic/sample.jsonl, ordering and domain selection, the SVG acceptance chart, the
requests.csv reader and `aurora plot`. Runs from the repository root (make test).
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"
#include <unistd.h>

static char temp_path[256];

static const char* write_temp(const char* name, const char* text) {
    snprintf(temp_path, sizeof(temp_path), "/tmp/aurora_test_traffic_%d_%s", (int)getpid(), name);
    FILE* f = fopen(temp_path, "wb");
    if (f == NULL) { fprintf(stderr, "test bug: cannot write %s\n", temp_path); exit(2); }
    fputs(text, f);
    fclose(f);
    return temp_path;
}

static char* read_whole(const char* path) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { return NULL; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* text = mallocCheck((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static int count_occurrences(const char* text, const char* needle) {
    int n = 0;
    for (const char* p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) { n++; }
    return n;
}

// Loads one JSONL text; returns traffic_load's status.
static int load_text(const char* text, Traffic* traffic, Error* err) {
    return traffic_load(traffic, write_temp("in.jsonl", text), err);
}

// `aurora plot ARGS...` through the program's own entry point (the flag table and its errors)
static int plot_command(int argc, char** args) {
    char* argv[16] = {"aurora", "plot"};
    for (int i = 0; i < argc && i < 14; i++) { argv[i + 2] = args[i]; }
    return aurora_main(argc + 2, argv);
}

static void test_json_values(void) {
    Traffic t;
    Error err;
    const char* text =
        "{\"prompt\": \"q\\\"b\\\\s\\/ \\b\\f\\n\\r\\t.\"}\n"
        "{\"prompt\": \"\\u00e9\\u4E2D raw: \xc3\xa9 pair: \\ud83d\\ude00 \\uD834\\uDD1E\"}\n"
        "\n"
        "   \t\n"
        "{\"meta\": {\"a\": [1, -2.5e3, 0, 0.5E-2, true, false, null, {\"b\": [], \"c\": {}}], \"d\": \"x\"},"
        " \"prompt\": \"nested\", \"domain\": \"d1\", \"score\": 3}\n"
        "  \t{ \"domain\" :\"d2\" ,  \"prompt\"\t:  \"spaced\" }  \r\n"
        "{\"prompt\": \"last line without newline\", \"domain\": \"d1\"}";
    int rc = load_text(text, &t, &err);
    check(rc == 0, "valid JSON lines load: %s", rc ? err.message : "");
    if (rc != 0) { return; }
    check(t.n_requests == 5, "5 requests, got %d", t.n_requests);
    check(strcmp(t.requests[0].prompt, "q\"b\\s/ \b\f\n\r\t.") == 0, "simple escapes: got '%s'", t.requests[0].prompt);
    check(strcmp(t.requests[1].prompt, "\xc3\xa9\xe4\xb8\xad raw: \xc3\xa9 pair: \xf0\x9f\x98\x80 \xf0\x9d\x84\x9e") == 0,
          "\\u escapes and surrogate pairs become UTF-8: got '%s'", t.requests[1].prompt);
    check(strcmp(t.requests[2].prompt, "nested") == 0, "nested unknown fields are skipped");
    check(strcmp(t.requests[3].prompt, "spaced") == 0, "whitespace around tokens and CRLF");
    check(strcmp(t.requests[4].prompt, "last line without newline") == 0, "last line without a newline");
    check(strcmp(t.requests[0].domain, "default") == 0, "domain defaults to 'default'");
    check(t.n_domains == 3 && strcmp(t.domains[0], "default") == 0 && strcmp(t.domains[1], "d1") == 0 &&
          strcmp(t.domains[2], "d2") == 0, "domains in order of first appearance");
    check(t.requests[2].domain == t.requests[4].domain, "requests share their domain's string");
    for (int i = 0; i < t.n_requests; i++) { check(t.requests[i].chat == 0, "plain prompts are not chat"); }
    traffic_free(&t);

    // a number literal longer than any buffer is read whole (it was cut at 63 characters: this one read as 1)
    char line[256];
    snprintf(line, sizeof(line), "{\"eps\": 1e-%0*d5, \"big\": 1%0*d}", 70, 0, 80, 0);
    JsonValue root;
    if (json_parse_line(line, strlen(line), "long.json", 1, &root, &err) != 0) { check(0, "long literals: %s", err.message); return; }
    // a document of several lines (config.json) is numbered by its own lines: the bad comma is on line 3, column
    // 14 (it was reported as line 1, column 26: the byte offset), and a repeated name names both places
    const char* multi = "{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}";
    JsonValue bad;
    check(json_parse_line(multi, strlen(multi), "multi.json", 1, &bad, &err) != 0 && strstr(err.message, "multi.json:3:14:"),
          "a document of several lines: the error at line 3, column 14 (%s)", err.message);
    const char* twice = "{\n  \"a\": 1,\n\n    \"a\": 2\n}";
    check(json_parse_line(twice, strlen(twice), "twice.json", 1, &bad, &err) != 0 && strstr(err.message, "twice.json:4:10:") &&
          strstr(err.message, "2:8 and 4:10"), "a repeated name in a document of several lines: its values at 2:8 and 4:10 (%s)",
          err.message);
    const JsonValue* eps = json_get(&root, "eps"), *big = json_get(&root, "big");
    check(eps && eps->number == 1e-5 && big && big->number == 1e80, "long number literals: %g and %g, expected 1e-05 and 1e+80",
          eps ? eps->number : 0.0, big ? big->number : 0.0);
    json_free(&root);
    // a literal too small for a double rounds to 0 (strtod's underflow), as any JSON reader reads it; one too
    // large is an error (test_malformed)
    const char* tiny = "{\"tiny\": 1e-999}";
    JsonValue small;
    if (json_parse_line(tiny, strlen(tiny), "tiny.json", 1, &small, &err) != 0) { check(0, "1e-999: %s", err.message); return; }
    const JsonValue* zero = json_get(&small, "tiny");
    check(zero && zero->type == JSON_NUMBER && zero->number == 0.0, "1e-999 reads as 0");
    json_free(&small);
}

static void test_malformed(void) {
    // each case: a valid line, a blank line, then the bad line (line 3)
    struct { const char* line; int column; const char* expected; } cases[] = {
        {"{\"prompt\": \"x\"", 15, "expected ',' or '}'"},
        {"{\"prompt\": \"x\",}", 16, "member name"},
        {"{\"prompt\": 'x'}", 12, "a JSON value"},
        {"{\"prompt\": \"a\\qb\"}", 15, "an escape"},
        {"{\"prompt\": \"\\ud800x\"}", 19, "low surrogate"},
        {"{\"prompt\": \"\\ud800\\u0041\"}", 19, "low surrogate"},
        {"{\"prompt\": \"\\udc00\"}", 13, "high surrogate"},
        {"{\"prompt\": \"\\u12g4\"}", 17, "four hex digits"},
        {"{\"prompt\": \"\\u0000\"}", 13, "\\u0000"},
        {"{\"prompt\": 01}", 13, "expected ',' or '}'"},
        {"{\"prompt\": 1.}", 14, "a digit after '.'"},
        {"{\"prompt\": -}", 13, "a digit"},
        {"{\"prompt\": 1e}", 14, "exponent"},
        // a number past double's range is an error (strtod gives an infinity), named with its column and text
        {"{\"prompt\": \"x\", \"n\": -1e999}", 22, "within double's range (magnitude up to about 1.8e308), found -1e999"},
        {"{\"prompt\": \"x\"} extra", 17, "end of line after the JSON object"},
        {"[\"prompt\"]", 1, "'{'"},
        {"{\"prompt\": tru}", 12, "'true'"},
        {"{\"prompt\": \"tab\there\"}", 16, "control bytes must be escaped"},
        {"{\"prompt\": \"bad \xff byte\"}", 17, "valid UTF-8"},
        {"{\"prompt\": \"overlong \xc0\xaf\"}", 22, "valid UTF-8"},
        {"{\"prompt\": \"unterminated}", 26, "closing the string"},
        {"{\"prompt\" \"x\"}", 11, "':'"},
        {"{\"a\": [1 2], \"prompt\": \"x\"}", 10, "',' or ']'"},
        {"{prompt: \"x\"}", 2, "member name"},
        // a name twice in one object (nested too), where readers disagree on which value counts
        {"{\"prompt\": \"a\", \"prompt\": \"b\"}", 27, "member \"prompt\" appears twice"},
        {"{\"prompt\": \"x\", \"m\": {\"k\": 1, \"j\": 2, \"k\": 3}}", 44, "member \"k\" appears twice"},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char text[512];
        snprintf(text, sizeof(text), "{\"prompt\": \"fine\"}\n\n%s\n{\"prompt\": \"after\"}\n", cases[c].line);
        Traffic t;
        Error err;
        int rc = load_text(text, &t, &err);
        check(rc != 0, "case %zu (%s) must fail", c, cases[c].line);
        if (rc == 0) { traffic_free(&t); continue; }
        char where[300];
        snprintf(where, sizeof(where), "%s:3:%d: ", temp_path, cases[c].column);
        check(strstr(err.message, where) != NULL, "case %zu: message names line 3, column %d: %s", c, cases[c].column, err.message);
        check(strstr(err.message, cases[c].expected) != NULL, "case %zu: message says '%s': %s", c, cases[c].expected, err.message);
        check(t.n_requests == 0 && t.requests == NULL && t.domains == NULL, "case %zu: nothing left to free", c);
    }
    // nesting deeper than the limit is an error, not a stack overflow
    char deep[400] = "{\"prompt\": \"x\", \"a\": ";
    for (int i = 0; i < 100; i++) { strcat(deep, "["); }
    strcat(deep, "\n");
    Traffic t;
    Error err;
    check(load_text(deep, &t, &err) != 0 && strstr(err.message, "levels of nesting") != NULL, "deep nesting: %s", err.message);
    // and more values in one line than the bound is an error, not gigabytes
    size_t n_zeros = (1 << 20) + 1, wide_size = 2 * n_zeros + 64;
    char* wide = mallocCheck(wide_size);
    size_t used = (size_t)snprintf(wide, wide_size, "{\"prompt\": \"x\", \"a\": [");
    for (size_t i = 0; i < n_zeros; i++) { wide[used++] = '0'; wide[used++] = i + 1 < n_zeros ? ',' : ']'; }
    snprintf(wide + used, wide_size - used, "}\n");
    check(load_text(wide, &t, &err) != 0 && strstr(err.message, "values in one document") != NULL, "too many values: %s",
          err.message);
    free(wide);
    // semantic errors name the line
    struct { const char* line; const char* expected; } semantic[] = {
        {"{\"domain\": \"c\", \"id\": 3}", ":2: no prompt"},
        {"{\"prompt\": 5}", ":2:12: field \"prompt\" must be a string, found a number"},
        {"{\"text\": null}", "field \"text\" must be a string, found null"},
        {"{\"prompt\": \"\"}", ":2: the prompt is empty"},
        {"{\"prompt\": \"x\", \"domain\": \"a b\"}", "must be a non-empty bare word"},
        {"{\"prompt\": \"x\", \"domain\": \"\"}", "must be a non-empty bare word"},
        // a terminal escape in the file reaches the message as text, not as the control bytes
        {"{\"prompt\": \"x\", \"domain\": \"\\u001b]0;x\\u0007\"}", "domain \"\\x1B]0;x\\x07\" must be"},
        {"{\"prompt\": \"x\", \"\\u001b[2J\": 1, \"\\u001b[2J\": 2}", "member \"\\x1B[2J\" appears twice"},
        {"{\"prompt\": \"x\", \"domain\": 7}", "field \"domain\" must be a string"},
        {"{\"conversations\": {}}", "must be an array of turns"},
        {"{\"conversations\": [\"hi\"]}", "conversations[0] must be an object"},
        {"{\"conversations\": [{\"from\": \"human\"}]}", "conversations[0] needs string fields"},
        {"{\"conversations\": [{\"from\": \"gpt\", \"value\": \"hello\"}]}", "no turn from \"human\" or \"user\""},
    };
    for (size_t c = 0; c < sizeof(semantic) / sizeof(semantic[0]); c++) {
        char text[512];
        snprintf(text, sizeof(text), "{\"prompt\": \"fine\"}\n%s\n", semantic[c].line);
        int rc = load_text(text, &t, &err);
        check(rc != 0, "semantic case %zu (%s) must fail", c, semantic[c].line);
        if (rc == 0) { traffic_free(&t); continue; }
        check(strstr(err.message, semantic[c].expected) != NULL && strstr(err.message, temp_path) != NULL,
              "semantic case %zu: message says '%s': %s", c, semantic[c].expected, err.message);
    }
    check(load_text("\n  \n", &t, &err) != 0 && strstr(err.message, "no requests") != NULL, "empty file: %s", err.message);
    check(traffic_load(&t, "/nonexistent/traffic.jsonl", &err) != 0 && strstr(err.message, "/nonexistent/traffic.jsonl: cannot open") != NULL,
          "missing file: %s", err.message);
}

static void test_variants(void) {
    Traffic t;
    Error err;
    const char* text =
        "{\"text\": \"from text\", \"domain\": \"a\"}\n"
        "{\"prompt\": \"prompt wins\", \"text\": \"not this\"}\n"
        "{\"id\": \"x1\", \"conversations\": [{\"from\": \"system\", \"value\": \"be brief\"}, "
        "{\"from\": \"human\", \"value\": \"first question\"}, {\"from\": \"gpt\", \"value\": \"answer\"}, "
        "{\"from\": \"human\", \"value\": \"second question\"}], \"domain\": \"chat\"}\n"
        "{\"conversations\": [{\"from\": \"user\", \"value\": \"as user\"}, {\"from\": \"assistant\", \"value\": \"ok\"}]}\n";
    int rc = load_text(text, &t, &err);
    check(rc == 0, "variants load: %s", rc ? err.message : "");
    if (rc != 0) { return; }
    check(t.n_requests == 4, "4 requests");
    check(strcmp(t.requests[0].prompt, "from text") == 0 && t.requests[0].chat == 0, "\"text\" field");
    check(strcmp(t.requests[1].prompt, "prompt wins") == 0, "\"prompt\" is preferred over \"text\"");
    check(strcmp(t.requests[2].prompt, "first question") == 0 && t.requests[2].chat == 1 &&
          strcmp(t.requests[2].domain, "chat") == 0, "ShareGPT: the first human turn, marked chat");
    check(strcmp(t.requests[3].prompt, "as user") == 0 && t.requests[3].chat == 1, "ShareGPT: \"user\" role");
    traffic_free(&t);
}

static void test_sample_and_order(void) {
    Traffic t;
    Error err;
    int rc = traffic_load(&t, "traffic/sample.jsonl", &err);
    check(rc == 0, "traffic/sample.jsonl loads: %s", rc ? err.message : "");
    if (rc != 0) { return; }
    const char* expected[] = {"c", "python", "prose", "shell"};
    check(t.n_requests == 40 && t.n_domains == 4, "40 requests in 4 domains, got %d in %d", t.n_requests, t.n_domains);
    for (int d = 0; d < 4 && d < t.n_domains; d++) { check(strcmp(t.domains[d], expected[d]) == 0, "domain %d is %s", d, expected[d]); }
    for (int i = 0; i < t.n_requests; i++) {
        size_t n = strlen(t.requests[i].prompt);
        check(n >= 300 && n <= 1200, "request %d: prompt of 300-1200 characters, got %zu", i, n);
        check(strcmp(t.requests[i].domain, expected[i / 10]) == 0, "request %d: domain %s", i, expected[i / 10]);
    }

    // mixed: a permutation, the same for the same seed, another for another seed
    Traffic a, b;
    traffic_load(&a, "traffic/sample.jsonl", &err);
    traffic_load(&b, "traffic/sample.jsonl", &err);
    traffic_order(&a, "mixed", 7);
    traffic_order(&b, "mixed", 7);
    int same = 1, moved = 0;
    for (int i = 0; i < a.n_requests; i++) {
        same &= strcmp(a.requests[i].prompt, b.requests[i].prompt) == 0;
        moved += strcmp(a.requests[i].prompt, t.requests[i].prompt) != 0;
    }
    check(same, "mixed: the same seed gives the same order");
    check(moved > 20, "mixed: most requests move (%d of 40 did)", moved);
    int used[40] = {0}, permutation = 1;
    for (int i = 0; i < a.n_requests; i++) {
        int found = 0;
        for (int j = 0; j < t.n_requests && !found; j++) {
            if (!used[j] && strcmp(a.requests[i].prompt, t.requests[j].prompt) == 0 &&
                strcmp(a.requests[i].domain, t.requests[j].domain) == 0) { used[j] = 1; found = 1; }
        }
        permutation &= found;
    }
    check(permutation, "mixed: a permutation of the requests");
    traffic_free(&b);
    traffic_load(&b, "traffic/sample.jsonl", &err);
    traffic_order(&b, "mixed", 8);
    int differs = 0;
    for (int i = 0; i < a.n_requests; i++) { differs += strcmp(a.requests[i].prompt, b.requests[i].prompt) != 0; }
    check(differs > 0, "mixed: another seed gives another order");

    // ordered restores the grouping, stable within each domain
    traffic_order(&a, "ordered", 0);
    for (int i = 0; i < a.n_requests; i++) {
        check(strcmp(a.requests[i].domain, expected[i / 10]) == 0, "ordered: request %d is %s", i, expected[i / 10]);
    }
    traffic_free(&a);
    traffic_free(&b);

    // select a domain
    rc = traffic_select_domain(&t, "python", &err);
    check(rc == 0 && t.n_requests == 10 && t.n_domains == 1 && strcmp(t.domains[0], "python") == 0,
          "select python: 10 requests, one domain");
    for (int i = 0; i < t.n_requests; i++) { check(strcmp(t.requests[i].domain, "python") == 0, "selected request %d is python", i); }
    traffic_free(&t);
    traffic_load(&t, "traffic/sample.jsonl", &err);
    rc = traffic_select_domain(&t, "rust", &err);
    check(rc != 0 && strstr(err.message, "'rust'") != NULL && strstr(err.message, "c, python, prose, shell") != NULL,
          "absent domain: error lists the domains present: %s", err.message);
    check(t.n_requests == 40, "a failed selection leaves the traffic as it was");
    traffic_free(&t);
}

static void test_default_traffic(void) {
    Traffic t;
    Error err;
    int rc = traffic_load(&t, "traffic/default.jsonl", &err);
    check(rc == 0, "traffic/default.jsonl loads: %s", rc ? err.message : "");
    if (rc != 0) { return; }
    check(t.n_requests == 4000 && t.n_domains == 4, "4000 requests in 4 domains, got %d in %d", t.n_requests, t.n_domains);
    int counts[4] = {0};
    for (int i = 0; i < t.n_requests; i++) {
        for (int d = 0; d < t.n_domains && d < 4; d++) { counts[d] += t.requests[i].domain == t.domains[d]; }
    }
    for (int d = 0; d < 4; d++) { check(counts[d] == 1000, "1000 requests in domain %d, got %d", d, counts[d]); }
    traffic_free(&t);
}

static void test_ordered_stable(void) {
    Traffic t;
    Error err;
    const char* text =
        "{\"prompt\": \"a1\", \"domain\": \"a\"}\n{\"prompt\": \"b1\", \"domain\": \"b\"}\n"
        "{\"prompt\": \"a2\", \"domain\": \"a\"}\n{\"prompt\": \"c1\", \"domain\": \"c\"}\n"
        "{\"prompt\": \"b2\", \"domain\": \"b\"}\n{\"prompt\": \"a3\", \"domain\": \"a\"}\n";
    if (load_text(text, &t, &err) != 0) { check(0, "load: %s", err.message); return; }
    traffic_order(&t, "ordered", 123);
    const char* expected[] = {"a1", "a2", "a3", "b1", "b2", "c1"};
    for (int i = 0; i < 6; i++) { check(strcmp(t.requests[i].prompt, expected[i]) == 0, "ordered[%d] = %s", i, expected[i]); }
    traffic_free(&t);
}

// At most TRAFFIC_MAX_DOMAINS distinct domains: the file with one more is refused at that line; the file at
// the bound loads and orders by domain, stably.
static void test_domain_bound(void) {
    size_t size = (size_t)(TRAFFIC_MAX_DOMAINS + 1) * 64;
    char* text = mallocCheck(size);
    size_t used = 0;
    for (int i = 0; i <= TRAFFIC_MAX_DOMAINS; i++) {
        used += (size_t)snprintf(text + used, size - used, "{\"prompt\": \"p%d\", \"domain\": \"d%d\"}\n", i,
                                 (TRAFFIC_MAX_DOMAINS - 1 - i % TRAFFIC_MAX_DOMAINS));
    }
    Traffic t;
    Error err;
    check(load_text(text, &t, &err) == 0 && t.n_domains == TRAFFIC_MAX_DOMAINS, "the bound's domains load: %s", err.message);
    if (t.n_requests == TRAFFIC_MAX_DOMAINS + 1) {
        traffic_order(&t, "ordered", 1);   // domain of first appearance: p0 (and p1024, same domain) first, then p1
        check(strcmp(t.requests[0].prompt, "p0") == 0 && strcmp(t.requests[1].prompt, "p1024") == 0 &&
              strcmp(t.requests[2].prompt, "p1") == 0, "ordered by domain: %s %s %s", t.requests[0].prompt,
              t.requests[1].prompt, t.requests[2].prompt);
        traffic_free(&t);
    }
    used = 0;
    for (int i = 0; i <= TRAFFIC_MAX_DOMAINS; i++) {
        used += (size_t)snprintf(text + used, size - used, "{\"prompt\": \"p\", \"domain\": \"d%d\"}\n", i);
    }
    check(load_text(text, &t, &err) != 0 && strstr(err.message, "expected at most 1024"), "one domain more is refused: %s",
          err.message);
    free(text);
}

static void test_chart_and_csv(void) {
    // a CSV as the replay writes it: 30 "c" requests, then 30 "prose"
    char path_csv[256];
    snprintf(path_csv, sizeof(path_csv), "/tmp/aurora_test_traffic_%d_requests.csv", (int)getpid());
    FILE* f = fopen(path_csv, "w");
    fprintf(f, "request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n");
    float written[60];
    for (int i = 0; i < 60; i++) {
        written[i] = 1.0f + (float)((i * 37) % 23) / 8.0f;
        fprintf(f, "%d,%s,%d,%d,%d,%.4f,%.3f,%d\n", i, i < 30 ? "c" : "prose", 100 + i, 64, 20, written[i], 0.5, i / 20);
    }
    fclose(f);
    RequestRows rows;
    Error err;
    int rc = read_requests_csv(path_csv, &rows, &err);
    check(rc == 0, "requests.csv reads: %s", rc ? err.message : "");
    if (rc != 0) { return; }
    check(rows.n == 60, "60 rows, got %d", rows.n);
    int equal = 1;
    for (int i = 0; i < rows.n; i++) {
        equal &= fabsf(rows.acceptance[i] - written[i]) < 1e-4f && strcmp(rows.domains[i], i < 30 ? "c" : "prose") == 0;
    }
    check(equal, "rows round-trip");

    // the chart: two series, domain lines from the first
    float flat[45];
    for (int i = 0; i < 45; i++) { flat[i] = i == 10 ? NAN : 1.5f; }
    ChartSeries series[2] = {
        {.label = "adaptive", .n = rows.n, .acceptance = rows.acceptance, .domains = (const char* const*)rows.domains},
        {.label = "frozen <v0> & \"co\"\x01\xEF\xBF\xBE", .n = 45, .acceptance = flat},
    };
    char path_svg[256];
    snprintf(path_svg, sizeof(path_svg), "/tmp/aurora_test_traffic_%d_chart.svg", (int)getpid());
    rc = svg_acceptance_chart(path_svg, series, 2, "test chart", &err);
    check(rc == 0, "chart writes: %s", rc ? err.message : "");
    char* svg = read_whole(path_svg);
    check(svg != NULL, "chart file exists");
    if (svg != NULL) {
        check(strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39) == 0, "starts with an <svg> element");
        check(strstr(svg, "</svg>\n") != NULL, "ends with </svg>");
        check(count_occurrences(svg, "<polyline") == 2, "one polyline per series, got %d", count_occurrences(svg, "<polyline"));
        check(strstr(svg, ">c</text>") != NULL && strstr(svg, ">prose</text>") != NULL, "domain labels");
        check(count_occurrences(svg, "stroke-dasharray") == 1, "one dashed line at the one domain change");
        check(strstr(svg, ">requests</text>") != NULL, "x axis label");
        check(strstr(svg, ">acceptance length (tokens per verify pass)</text>") != NULL, "y axis label");
        check(strstr(svg, ">adaptive</text>") != NULL, "legend label of series 1");
        check(strstr(svg, ">frozen &lt;v0&gt; &amp; &quot;co&quot;\xEF\xBF\xBD\xEF\xBF\xBD</text>") != NULL,
              "legend label escaped (a control character and U+FFFE, which XML does not allow, as U+FFFD)");
        check(strstr(svg, ">test chart</text>") != NULL, "title");
        check(strstr(svg, "#1f77b4") != NULL && strstr(svg, "#d62728") != NULL, "distinct colours");
        check(strstr(svg, "nan") == NULL && strstr(svg, "inf") == NULL, "non-finite values are skipped");
        check(strstr(svg, ">1</text>") != NULL, "the y axis starts at 1");
        free(svg);
    }
    // a replay's series with skipped requests: the points at their request numbers (3, 38, 39), and the
    // domain line with them (at request 38, right of the middle; it was drawn at row 1, near the left edge)
    const char* shifted_domains[] = {"c", "shell", "shell"};
    float shifted_acceptance[] = {1.5f, 1.7f, 1.8f};
    int shifted_x[] = {3, 38, 39};
    ChartSeries shifted = {.label = "skips", .n = 3, .acceptance = shifted_acceptance, .x = shifted_x,
                           .domains = shifted_domains};
    rc = svg_acceptance_chart(path_svg, &shifted, 1, NULL, &err);
    svg = rc == 0 ? read_whole(path_svg) : NULL;
    const char* line = svg ? strstr(svg, "stroke-dasharray=\"6 4\"") : NULL;
    double line_x = -1.0;
    if (line) {
        const char* start = line;
        while (start > svg && strncmp(start, "<line", 5) != 0) { start--; }
        sscanf(start, "<line x1=\"%lf\"", &line_x);
    }
    check(line_x > (SVG_LEFT + SVG_RIGHT) / 2.0, "the domain line at request 38 of 39 drawn at x %.1f, expected right of %.1f",
          line_x, (SVG_LEFT + SVG_RIGHT) / 2.0);
    free(svg);
    // rows out of order (two runs' rows one after the other), the largest request index last but one, and
    // INT_MAX: every point inside the plot (the x extent was once the last row's, and INT_MAX + 1 overflowed)
    for (int big = 0; big < 2; big++) {
        int unordered_x[] = {3, big ? INT_MAX : 39, 10};
        float unordered_acceptance[] = {1.5f, 1.7f, 1.8f};
        ChartSeries unordered = {.label = "two runs", .n = 3, .acceptance = unordered_acceptance, .x = unordered_x,
                                 .measured_curve = 1};
        rc = svg_acceptance_chart(path_svg, &unordered, 1, NULL, &err);
        svg = rc == 0 ? read_whole(path_svg) : NULL;
        int inside = 0, circles = 0;
        for (const char* at = svg; at && (at = strstr(at, "<circle cx=\"")) != NULL; at++) {
            double cx = -1.0;
            sscanf(at, "<circle cx=\"%lf\"", &cx);
            circles++;
            inside += cx >= SVG_LEFT - 1e-9 && cx <= SVG_RIGHT + 1e-9;
        }
        check(rc == 0 && circles == 3 && inside == 3, "rows out of order%s: %d of %d points inside the plot",
              big ? " with request INT_MAX" : "", inside, circles);
        free(svg);
    }
    ChartSeries empty = {.label = "empty", .n = 0, .acceptance = flat};
    check(svg_acceptance_chart(path_svg, &empty, 1, NULL, &err) != 0 && strstr(err.message, "no requests") != NULL,
          "an empty series is an error");
    check(svg_acceptance_chart("/nonexistent/dir/chart.svg", series, 2, NULL, &err) != 0 &&
          strstr(err.message, "cannot write") != NULL, "unwritable path: %s", err.message);

    // aurora plot
    char label_arg[300];
    snprintf(label_arg, sizeof(label_arg), "%s:my run", path_csv);
    char* ok_args[] = {"-o", path_svg, "--title", "two runs", path_csv, label_arg};
    check(plot_command(6, ok_args) == 0, "aurora plot with two runs");
    svg = read_whole(path_svg);
    if (svg != NULL) {
        check(strstr(svg, ">my run</text>") != NULL, "plot: a :LABEL names the run");
        check(strstr(svg, ">tmp</text>") != NULL, "plot: the default label is the directory name");
        check(count_occurrences(svg, "<polyline") == 2, "plot: two polylines");
        free(svg);
    }
    // a title in another encoding (Latin-1 "Caf\xe9") and a label cut inside a character (130 x "é" is 260
    // bytes, the label keeps 255): the chart is still valid UTF-8 (each stray byte written as U+FFFD)
    char long_label[600];
    int at = snprintf(long_label, sizeof(long_label), "%s:", path_csv);
    for (int i = 0; i < 130; i++) { at += snprintf(long_label + at, sizeof(long_label) - (size_t)at, "\xc3\xa9"); }
    char* latin1_args[] = {"-o", path_svg, "--title", "Caf\xe9", long_label};
    check(plot_command(5, latin1_args) == 0, "aurora plot with a Latin-1 title and a long label");
    svg = read_whole(path_svg);
    if (svg != NULL) {
        size_t length = strlen(svg), invalid = 0;
        for (size_t i = 0; i < length; ) {
            size_t n = utf8_valid_length((const unsigned char*)svg + i, length - i);
            invalid += n == 0;
            i += n ? n : 1;
        }
        check(invalid == 0 && strstr(svg, "Caf\xEF\xBF\xBD") != NULL, "plot: %zu bytes of the chart are not valid UTF-8 "
              "(expected none; the Latin-1 title as Caf U+FFFD)", invalid);
        free(svg);
    }
    // JSON strings likewise (dump's header): a stray byte is \ufffd
    char* json_text = NULL;
    size_t json_size = 0;
    FILE* memory = open_memstream(&json_text, &json_size);
    json_write_string(memory, "caf\xe9 \xc3\xa9\"");
    fclose(memory);
    check(json_text && strcmp(json_text, "\"caf\\ufffd \xc3\xa9\\\"\"") == 0, "json_write_string of Latin-1 text: %s",
          json_text ? json_text : "(nothing)");
    free(json_text);
    char* help[] = {"--help"};
    check(plot_command(1, help) == 0, "plot --help");
    char* bad_flag[] = {"-o", path_svg, "--bogus", path_csv};
    check(plot_command(4, bad_flag) == 1, "plot: unknown flag");
    char* no_out[] = {path_csv};
    check(plot_command(1, no_out) == 1, "plot: missing -o");
    char* no_runs[] = {"-o", path_svg};
    check(plot_command(2, no_runs) == 1, "plot: no runs");
    char* missing[] = {"-o", path_svg, "/nonexistent/requests.csv"};
    check(plot_command(3, missing) == 1, "plot: missing CSV");
    char* dangling[] = {"-o"};
    check(plot_command(1, dangling) == 1, "plot: -o without a value");

    // every header version reads: the current one (skipped rows are not measurements) and 9 columns (status,
    // no prefill_seconds); the 8-column one is the file above
    const char* current = write_temp("current.csv", REQUESTS_CSV_HEADER "\n"
                                     "0,c,10,4,2,2.0,0.5,0,served,0.2\n1,c,0,0,0,0,0,0,skipped_prompt_too_long,0\n"
                                     "2,prose,10,4,4,1.0,0.5,1,served,0.2\n3,c,0,0,0,0,0,1,skipped_prompt_empty,0\n");
    RequestRows versions;
    rc = read_requests_csv(current, &versions, &err);
    check(rc == 0 && versions.n == 2 && versions.acceptance[1] == 1.0f && strcmp(versions.domains[1], "prose") == 0,
          "the current header: 2 served rows of 4, got %d (%s)", rc ? -1 : versions.n, rc ? err.message : "");
    // each row keeps its request index: the chart draws the row after a skipped request at its own x, 2
    check(rc == 0 && versions.request[0] == 0 && versions.request[1] == 2, "the served rows' request indexes: %d %d "
          "(expected 0 2)", rc ? -1 : versions.request[0], rc ? -1 : versions.request[1]);
    if (rc == 0) { request_rows_free(&versions); }
    const char* nine = write_temp("nine.csv", "request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,"
                                  "seconds,draft_version,status\n0,c,10,4,2,2.0,0.5,0,served\n");
    rc = read_requests_csv(nine, &versions, &err);
    check(rc == 0 && versions.n == 1, "the 9-column header (%s)", rc ? err.message : "");
    if (rc == 0) { request_rows_free(&versions); }

    // malformed CSV files name the line
    struct { const char* text; const char* expected; } bad[] = {
        {"request,domain\n0,c\n", ":1: expected the header"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_versio\n",
         ":1: expected the header"},   // a prefix that ends inside a column name
        {REQUESTS_CSV_HEADER "\n0,c,1,2,3,2.5,0.1,0,served\n", ":2: expected 10 comma-separated fields"},
        {"", "empty file"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,c,1,2,3,2.5,0.1,0\n1,c,1,2,3,2.5,0.1\n", ":3: expected 8 comma-separated fields"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,c,1,2,3,fast,0.1,0\n", ":2: acceptance_length (field 6) must be a number >= 1 (tokens per verify pass), found 'fast'"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,c,1,2,3,nan,0.1,0\n", ":2: acceptance_length (field 6) must be a number >= 1 (tokens per verify pass), found 'nan'"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,c,1,2,3,-5,0.1,0\n", ":2: acceptance_length (field 6) must be a number >= 1 (tokens per verify pass), found '-5'"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,c,1,2,3,0.5,0.1,0\n", ":2: acceptance_length (field 6) must be a number >= 1 (tokens per verify pass), found '0.5'"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,c,1,2,3,1e39,0.1,0\n", ":2: acceptance_length (field 6) must be a number >= 1 (tokens per verify pass), found '1e39'"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "x,c,1,2,3,2.0,0.1,0\n", ":2: request (field 1) must be a request index >= 0, found 'x'"},
        {REQUESTS_CSV_HEADER "\n0,c,10,4,2,2.0,0.5,0,SERVED,0.2\n",
         ":2: status (field 9) must be served, skipped_prompt_too_long or skipped_prompt_empty, found 'SERVED'"},
        {"request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n"
         "0,,1,2,3,2.0,0.1,0\n", ":2: domain (field 2) is empty"},
    };
    for (size_t c = 0; c < sizeof(bad) / sizeof(bad[0]); c++) {
        RequestRows r;
        const char* path = write_temp("bad.csv", bad[c].text);
        rc = read_requests_csv(path, &r, &err);
        check(rc != 0 && strstr(err.message, bad[c].expected) != NULL && strstr(err.message, path) != NULL,
              "bad CSV %zu: '%s' in: %s", c, bad[c].expected, rc ? err.message : "(no error)");
        if (rc == 0) { request_rows_free(&r); }
    }
    request_rows_free(&rows);
    remove(path_csv);
    remove(path_svg);
}

int main(void) {
    test_json_values();
    test_malformed();
    test_variants();
    test_sample_and_order();
    test_default_traffic();
    test_ordered_stable();
    test_domain_bound();
    test_chart_and_csv();
    const char* written[] = {"in.jsonl", "bad.csv", "current.csv", "nine.csv"};   // every name write_temp took
    for (int i = 0; i < 4; i++) { remove(write_temp(written[i], "")); }
    return test_summary();
}
