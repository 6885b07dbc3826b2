/*
plot.c: the acceptance chart. Reads the per-request CSV files a replay writes and draws acceptance
length (tokens per verify pass) against request index, several runs on one chart, as a self-contained
SVG file (no fonts, scripts or images to fetch; opens in any browser).

Contract:
  - svg_acceptance_chart draws, per series: every request as a faint dot, and the trailing moving
    average over the last 25 requests (fewer at the start) as a polyline, in one colour per series
    (10 distinct colours, then they repeat). The y axis starts at 1.0 (a verify pass always yields at
    least one token); axes have ticks and labels; a legend names each series with its mean. Where the
    domain of the FIRST series changes (traffic replayed in "ordered" mode) a vertical dashed line is
    drawn, labelled with the domain that starts there; mixed traffic, whose domain changes at almost
    every request (more than 20 changes), gets no lines. Non-finite acceptance values are skipped.
  - read_requests_csv reads the replay's requests.csv (at most 64 MiB, a regular file): the header must be
        request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version,status,prefill_seconds
    (or its first 8 or 9 columns, from older runs), every row has that many comma-separated fields, and
    only rows whose status is "served" are measurements (skipped requests are left out). Errors name
    the file, the line and what was expected.
  - plot_runs is `aurora plot` (aurora.c parses its flags): returns 0, or 1 after a one-line "error: ...".
  - every SVG is written atomically (a temporary file renamed over the target).
*/
#include <errno.h>
#include "aurora.h"

// ----------------------------------------------------------------------------
// the SVG chart

enum { SVG_WIDTH = 1100, SVG_HEIGHT = 560, SVG_LEFT = 80, SVG_RIGHT = 850, SVG_TOP = 64, SVG_BOTTOM = 500 };
enum { SVG_MOVING_WINDOW = 25, SVG_MAX_DOMAIN_LINES = 20 };
static const char* SVG_COLOURS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

// Writes text with the five XML special characters escaped, and as U+FFFD the characters XML 1.0 does not
// allow (the controls below 0x20 but tab, newline and carriage return; U+FFFE and U+FFFF) and each byte
// that is not part of a valid UTF-8 sequence (a label in another encoding, or cut inside a character), so any
// label gives a valid file.
static void svg_write_escaped(FILE* f, const char* text) {
    size_t length = strlen(text);
    for (size_t i = 0; i < length; ) {
        char c = text[i];
        const unsigned char* u = (const unsigned char*)text + i;
        size_t n = utf8_valid_length(u, length - i);
        if (n == 3 && u[0] == 0xEF && u[1] == 0xBF && (u[2] == 0xBE || u[2] == 0xBF)) {   // U+FFFE, U+FFFF
            fputs("\xEF\xBF\xBD", f);
            i += 3;
            continue;
        }
        if (n == 0 || ((unsigned char)c < 0x20 && c != '\t' && c != '\n' && c != '\r')) {
            fputs("\xEF\xBF\xBD", f);
            i++;
            continue;
        }
        switch (c) {
            case '&': fputs("&amp;", f); break;
            case '<': fputs("&lt;", f); break;
            case '>': fputs("&gt;", f); break;
            case '"': fputs("&quot;", f); break;
            case '\'': fputs("&apos;", f); break;
            default: fwrite(text + i, 1, n, f);
        }
        i += n;
    }
}

// A "nice" tick step (1, 2 or 5 times a power of ten) near raw.
static double svg_nice_step(double raw) {
    if (!(raw > 0)) { return 1.0; }
    double power = pow(10.0, floor(log10(raw)));
    double f = raw / power;
    return (f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0) * power;
}

typedef struct { double x_max, y_min, y_max; } SvgScale;

static double svg_x(const SvgScale* s, double request) { return SVG_LEFT + (SVG_RIGHT - SVG_LEFT) * request / s->x_max; }
// A point's x: its request number where the series has them, else its row
static double svg_point_x(const ChartSeries* series, int i) { return series->x ? series->x[i] : i; }
static double svg_y(const SvgScale* s, double value) {
    if (value < s->y_min) { value = s->y_min; }
    return SVG_BOTTOM - (SVG_BOTTOM - SVG_TOP) * (value - s->y_min) / (s->y_max - s->y_min);
}

static void svg_axes(FILE* f, const SvgScale* s, double x_step, double y_step) {
    fprintf(f, "<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n");
    for (double v = s->y_min + y_step; v <= s->y_max + 1e-9; v += y_step) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", SVG_LEFT, svg_y(s, v), SVG_RIGHT, svg_y(s, v));
    }
    fprintf(f, "</g>\n<g stroke=\"#333\" stroke-width=\"1\">\n");
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", SVG_LEFT, SVG_BOTTOM, SVG_RIGHT, SVG_BOTTOM);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", SVG_LEFT, SVG_TOP, SVG_LEFT, SVG_BOTTOM);
    for (double v = 0; v <= s->x_max + 1e-9; v += x_step) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", svg_x(s, v), SVG_BOTTOM, svg_x(s, v), SVG_BOTTOM + 5);
    }
    for (double v = s->y_min; v <= s->y_max + 1e-9; v += y_step) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", SVG_LEFT - 5, svg_y(s, v), SVG_LEFT, svg_y(s, v));
    }
    fprintf(f, "</g>\n<g fill=\"#333\">\n");
    for (double v = 0; v <= s->x_max + 1e-9; v += x_step) {
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", svg_x(s, v), SVG_BOTTOM + 20, v);
    }
    for (double v = s->y_min; v <= s->y_max + 1e-9; v += y_step) {
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", SVG_LEFT - 9, svg_y(s, v) + 4, v);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">requests</text>\n", (SVG_LEFT + SVG_RIGHT) / 2, SVG_BOTTOM + 44);
    fprintf(f, "<text transform=\"translate(%d %d) rotate(-90)\" text-anchor=\"middle\">acceptance length (tokens per verify pass)</text>\n",
            SVG_LEFT - 50, (SVG_TOP + SVG_BOTTOM) / 2);
    fprintf(f, "</g>\n");
}

// Dashed lines where the first series' domain changes, each labelled with the domain that starts there.
static void svg_domain_lines(FILE* f, const SvgScale* s, const ChartSeries* first) {
    if (first->domains == NULL || first->n == 0) { return; }
    int changes = 0;
    for (int i = 1; i < first->n; i++) { changes += strcmp(first->domains[i], first->domains[i - 1]) != 0; }
    if (changes > SVG_MAX_DOMAIN_LINES) { return; }
    fprintf(f, "<g font-size=\"12\" fill=\"#555\">\n");
    for (int i = 0; i < first->n; i++) {
        if (i > 0 && strcmp(first->domains[i], first->domains[i - 1]) == 0) { continue; }
        double x = svg_x(s, svg_point_x(first, i));   // at the point's x (a request number), not its row
        if (i > 0) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#777\" stroke-dasharray=\"6 4\"/>\n",
                    x, SVG_TOP - 14, x, SVG_BOTTOM);
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">", x + 4, SVG_TOP - 4);
        svg_write_escaped(f, first->domains[i]);
        fprintf(f, "</text>\n");
    }
    fprintf(f, "</g>\n");
}

// One series: faint dots (a path of zero-length round-capped segments, compact for thousands of
// points) and the moving average as polylines (broken where a window holds no finite value).
static void svg_series(FILE* f, const SvgScale* s, const ChartSeries* series, const char* colour) {
    if (series->measured_curve) { // a line through the points, a marker on each
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.2\" stroke-dasharray=\"6 3\" points=\"", colour);
        for (int i = 0; i < series->n; i++) {
            if (isfinite(series->acceptance[i])) { fprintf(f, "%.1f,%.1f ", svg_x(s, svg_point_x(series, i)), svg_y(s, series->acceptance[i])); }
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; i < series->n; i++) {
            if (isfinite(series->acceptance[i])) {
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", svg_x(s, svg_point_x(series, i)),
                        svg_y(s, series->acceptance[i]), colour);
            }
        }
        return;
    }
    fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-opacity=\"0.22\" stroke-width=\"3.5\" stroke-linecap=\"round\" d=\"", colour);
    for (int i = 0; i < series->n; i++) {
        if (isfinite(series->acceptance[i])) {
            fprintf(f, "M%.1f %.1fh0", svg_x(s, svg_point_x(series, i)), svg_y(s, series->acceptance[i]));
        }
    }
    fprintf(f, "\"/>\n");
    int in_line = 0;
    for (int i = 0; i < series->n; i++) {
        double sum = 0.0;
        int count = 0;
        int from = i - SVG_MOVING_WINDOW + 1 > 0 ? i - SVG_MOVING_WINDOW + 1 : 0;
        for (int j = from; j <= i; j++) {
            if (isfinite(series->acceptance[j])) { sum += series->acceptance[j]; count++; }
        }
        if (count == 0) {
            if (in_line) { fprintf(f, "\"/>\n"); in_line = 0; }
            continue;
        }
        if (!in_line) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.2\" stroke-linejoin=\"round\" points=\"", colour);
            in_line = 1;
        }
        fprintf(f, "%.1f,%.1f ", svg_x(s, svg_point_x(series, i)), svg_y(s, sum / count));
    }
    if (in_line) { fprintf(f, "\"/>\n"); }
}

static double svg_mean(const ChartSeries* series) {
    double sum = 0.0;
    int count = 0;
    for (int i = 0; i < series->n; i++) {
        if (isfinite(series->acceptance[i])) { sum += series->acceptance[i]; count++; }
    }
    return count > 0 ? sum / count : NAN;
}

int svg_acceptance_chart(const char* path, const ChartSeries* series, int n_series, const char* title, Error* err) {
    if (n_series < 1) { return error_set(err, "%s: no series to draw", path); }
    double n_max = 0;   // one past the largest x of any point (a series' rows need not be in order)
    double y_top = 2.0;
    for (int k = 0; k < n_series; k++) {
        if (series[k].n < 1) { return error_set(err, "%s: series '%s' has no requests", path, series[k].label); }
        for (int i = 0; i < series[k].n; i++) {
            if (svg_point_x(&series[k], i) + 1 > n_max) { n_max = svg_point_x(&series[k], i) + 1; }
            if (isfinite(series[k].acceptance[i]) && series[k].acceptance[i] > y_top) { y_top = series[k].acceptance[i]; }
        }
    }
    double x_step = svg_nice_step(n_max / 8.0 < 1.0 ? 1.0 : n_max / 8.0);
    double y_step = svg_nice_step((y_top - 1.0) / 6.0);
    SvgScale scale = {n_max > 1 ? n_max - 1 : 1, 1.0, 1.0 + ceil((y_top - 1.0) / y_step - 1e-9) * y_step};

    OutputFile output;
    if (output_open(&output, path, err) != 0) { return -1; }
    FILE* f = output.stream;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n", SVG_WIDTH, SVG_HEIGHT, SVG_WIDTH, SVG_HEIGHT);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", SVG_WIDTH, SVG_HEIGHT);
    fprintf(f, "<text x=\"%d\" y=\"26\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">", (SVG_LEFT + SVG_RIGHT) / 2);
    svg_write_escaped(f, title != NULL ? title : "acceptance length per request");
    fprintf(f, "</text>\n");
    svg_axes(f, &scale, x_step, y_step);
    svg_domain_lines(f, &scale, &series[0]);
    for (int k = 0; k < n_series; k++) {
        fprintf(f, "<!-- series %d (legend entry %d) -->\n", k + 1, k + 1);
        svg_series(f, &scale, &series[k], SVG_COLOURS[k % 10]);
    }
    // legend, right of the plot: a line in the series' colour, its label and mean
    fprintf(f, "<g font-size=\"12\">\n<text x=\"%d\" y=\"%d\" font-weight=\"bold\">moving average of %d</text>\n",
            SVG_RIGHT + 20, SVG_TOP + 4, SVG_MOVING_WINDOW);
    for (int k = 0; k < n_series; k++) {
        int y = SVG_TOP + 26 + 36 * k;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>\n",
                SVG_RIGHT + 20, y, SVG_RIGHT + 44, y, SVG_COLOURS[k % 10]);
        fprintf(f, "<text x=\"%d\" y=\"%d\">", SVG_RIGHT + 50, y + 4);
        svg_write_escaped(f, series[k].label);
        fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\" fill=\"#666\">mean %.2f, %d %s</text>\n",
                SVG_RIGHT + 50, y + 19, svg_mean(&series[k]), series[k].n, series[k].measured_curve ? "evaluations" : "requests");
    }
    fprintf(f, "</g>\n</svg>\n");
    return output_commit(&output, err);
}

// ----------------------------------------------------------------------------
// the replay's per-request CSV

// The header replay writes. A row whose status is not "served" (a skipped request) is not a
// measurement: the reader leaves it out. Files from before the status column (8 fields) still read.
// the columns of the header, and the fewest an older run's file has (no status: every row served)
enum { REQUESTS_CSV_FIELDS = 10, REQUESTS_CSV_OLDEST_FIELDS = 8, REQUESTS_CSV_STATUS = 8, REQUESTS_CSV_MAX_BYTES = 64 << 20 };

// The number of columns of a header that is REQUESTS_CSV_HEADER or one of its older prefixes, else 0.
static int requests_csv_columns(const char* line) {
    size_t length = strlen(line);
    if (strncmp(line, REQUESTS_CSV_HEADER, length) != 0) { return 0; }
    if (REQUESTS_CSV_HEADER[length] != '\0' && REQUESTS_CSV_HEADER[length] != ',') { return 0; }
    int columns = 1;
    for (size_t i = 0; i < length; i++) { columns += line[i] == ','; }
    return columns >= REQUESTS_CSV_OLDEST_FIELDS ? columns : 0;
}

void request_rows_free(RequestRows* rows) {
    for (int i = 0; i < rows->n; i++) { free(rows->domains[i]); }
    free(rows->domains);
    free(rows->acceptance);
    free(rows->request);
    memset(rows, 0, sizeof(*rows));
}

int read_requests_csv(const char* path, RequestRows* rows, Error* err) {
    memset(rows, 0, sizeof(*rows));
    char* text = NULL;
    size_t text_length = 0;
    if (read_text_file(path, REQUESTS_CSV_MAX_BYTES, &text, &text_length, err) != 0) { return -1; }
    int line_number = 0, capacity = 0, n_expected = REQUESTS_CSV_FIELDS;
    for (char* line = text; line < text + text_length; ) {
        char* newline = memchr(line, '\n', (size_t)(text + text_length - line));
        char* next = newline ? newline + 1 : text + text_length;
        size_t length = (size_t)(next - line) - (newline ? 1 : 0);
        while (length > 0 && line[length - 1] == '\r') { length--; }
        line[length] = '\0';
        line_number++;
        if (line_number == 1) {
            n_expected = requests_csv_columns(line);
            if (n_expected == 0) {
                char shown[112];
                error_set(err, "%s:1: expected the header '%s', found '%s'", path, REQUESTS_CSV_HEADER,
                          printable_text(line, shown, sizeof(shown)));
                goto fail;
            }
            line = next;
            continue;
        }
        if (length == 0) { line = next; continue; }
        char* fields[REQUESTS_CSV_FIELDS];
        int n_fields = 0;
        for (char* cursor = line; ; ) {
            char* comma = strchr(cursor, ',');
            if (n_fields < REQUESTS_CSV_FIELDS) { fields[n_fields] = cursor; }
            n_fields++;
            if (comma == NULL) { break; }
            *comma = '\0';
            cursor = comma + 1;
        }
        line = next;
        if (n_fields != n_expected) {
            error_set(err, "%s:%d: expected %d comma-separated fields (%s), found %d", path, line_number, n_expected,
                      REQUESTS_CSV_HEADER, n_fields);
            goto fail;
        }
        if (n_expected > REQUESTS_CSV_STATUS) {
            const char* status = fields[REQUESTS_CSV_STATUS];
            if (strcmp(status, "skipped_prompt_too_long") == 0 || strcmp(status, "skipped_prompt_empty") == 0) {
                continue;   // skipped: no measurement
            }
            if (strcmp(status, "served") != 0) {
                error_set(err, "%s:%d: status (field 9) must be served, skipped_prompt_too_long or skipped_prompt_empty, "
                          "found '%.40s'", path, line_number, status);
                goto fail;
            }
        }
        char* end = NULL;
        long request = strtol(fields[0], &end, 10);
        if (fields[0][0] == '\0' || *end != '\0' || request < 0 || request > INT_MAX) {
            error_set(err, "%s:%d: request (field 1) must be a request index >= 0, found '%.40s'", path, line_number, fields[0]);
            goto fail;
        }
        double acceptance = strtod(fields[5], &end);
        // (a pass emits at least the target's own token, so a served request's length is at least 1)
        if (fields[5][0] == '\0' || *end != '\0' || !(acceptance >= 1.0) || !isfinite((float)acceptance)) {
            error_set(err, "%s:%d: acceptance_length (field 6) must be a number >= 1 (tokens per verify pass), found "
                      "'%.40s'", path, line_number, fields[5]);
            goto fail;
        }
        if (fields[1][0] == '\0') { error_set(err, "%s:%d: domain (field 2) is empty", path, line_number); goto fail; }
        if (rows->n == capacity) {
            capacity = capacity ? capacity * 2 : 256;
            char** domains = mallocCheck((size_t)capacity * sizeof(char*));
            float* values = mallocCheck((size_t)capacity * sizeof(float));
            int* requests = mallocCheck((size_t)capacity * sizeof(int));
            if (rows->n > 0) {
                memcpy(domains, rows->domains, (size_t)rows->n * sizeof(char*));
                memcpy(values, rows->acceptance, (size_t)rows->n * sizeof(float));
                memcpy(requests, rows->request, (size_t)rows->n * sizeof(int));
            }
            free(rows->domains);
            free(rows->acceptance);
            free(rows->request);
            rows->domains = domains;
            rows->acceptance = values;
            rows->request = requests;
        }
        rows->domains[rows->n] = string_copy(fields[1]);
        rows->acceptance[rows->n] = (float)acceptance;
        rows->request[rows->n] = (int)request;
        rows->n++;
    }
    if (line_number == 0) { error_set(err, "%s: empty file (expected the header '%s')", path, REQUESTS_CSV_HEADER); goto fail; }
    free(text);
    return 0;
fail:
    free(text);
    request_rows_free(rows);
    return -1;
}

// ----------------------------------------------------------------------------
// aurora plot

// The default label of a CSV path: its directory's name ("runs/adaptive/requests.csv" -> "adaptive"),
// or the file name without extension when the path has no directory.
static void svg_default_label(const char* path, char* label, size_t size) {
    const char* slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(label, size, "%s", path);
        char* dot = strrchr(label, '.');
        if (dot != NULL && dot != label) { *dot = '\0'; }
        return;
    }
    const char* end = slash;
    while (end > path && end[-1] == '/') { end--; }   // "a//requests.csv"
    const char* start = end;
    while (start > path && start[-1] != '/') { start--; }
    if (end == start || (end - start == 1 && start[0] == '.')) {   // "/requests.csv" or "./requests.csv"
        snprintf(label, size, "%s", slash + 1);
        return;
    }
    snprintf(label, size, "%.*s", (int)(end - start), start);
}

// `aurora plot`: runs are RUN/requests.csv[:LABEL]; draws them on one chart at out_path. Returns the exit
// status (0, or 1 after an "error: ..." line).
int plot_runs(const char* out_path, const char* title, const char* const* runs, int n_runs) {
    RequestRows* rows = callocCheck((size_t)n_runs, sizeof(RequestRows));
    ChartSeries* series = callocCheck((size_t)n_runs, sizeof(ChartSeries));
    char** labels = callocCheck((size_t)n_runs, sizeof(char*));
    int status = 0;
    Error err;
    for (int k = 0; k < n_runs && status == 0; k++) {
        // PATH:LABEL; a ':' followed by a '/' belongs to the path
        char* path = string_copy(runs[k]);
        char* colon = strrchr(path, ':');
        labels[k] = mallocCheck(256);
        if (colon != NULL && strchr(colon, '/') == NULL) {
            *colon = '\0';
            snprintf(labels[k], 256, "%s", colon + 1);
            if (labels[k][0] == '\0') { svg_default_label(path, labels[k], 256); }
        } else {
            svg_default_label(path, labels[k], 256);
        }
        const char* run_flag = "the run";
        if (check_not_input(out_path, "-o", (const char* const*)&path, &run_flag, 1) != 0) {
            status = 1;
        } else if (read_requests_csv(path, &rows[k], &err) != 0) {
            fprintf(stderr, "error: %s\n", err.message);
            status = 1;
        } else if (rows[k].n == 0) {
            fprintf(stderr, "error: %s: no requests after the header\n", path);
            status = 1;
        }
        free(path);
        series[k] = (ChartSeries){.label = labels[k], .n = rows[k].n, .acceptance = rows[k].acceptance,
                                  .domains = (const char* const*)rows[k].domains, .x = rows[k].request};
    }
    if (status == 0) {
        // the output's directory is made once every input has been read, so a bad input leaves none behind
        if (check_writable(out_path, 1, &err) != 0 || svg_acceptance_chart(out_path, series, n_runs, title, &err) != 0) {
            fprintf(stderr, "error: %s\n", err.message);
            status = 1;
        } else {
            fprintf(stderr, "wrote %s: %d run%s\n", out_path, n_runs, n_runs == 1 ? "" : "s");
        }
    }
    for (int k = 0; k < n_runs; k++) { request_rows_free(&rows[k]); free(labels[k]); }
    free(rows);
    free(series);
    free(labels);
    return status;
}
