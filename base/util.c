/*
util.c: the few basics every part of the program shares: error messages, checked allocation, and
files: inputs are regular files only (checked on the opened descriptor, so a FIFO never blocks us) and
outputs are written to a temporary name beside the target and renamed over it when complete (so a
failed write, a full disk or an interrupted run never leaves a truncated file or loses the old one).
Included first by aurora.c (one translation unit).
*/
#include <stdarg.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include "aurora.h"

// (a message quotes what was wrong, often a file's own text: its control bytes are shown escaped, \x1B and kin,
// so that a crafted file cannot drive the terminal the error is printed to)
int error_set(Error* err, const char* format, ...) {
    if (err != NULL) {
        char raw[sizeof(err->message)];
        va_list args;
        va_start(args, format);
        vsnprintf(raw, sizeof(raw), format, args);
        va_end(args);
        printable_text(raw, err->message, sizeof(err->message));
    }
    return -1;
}

void* checked_malloc(size_t size, const char* file, int line) {
    void* pointer = malloc(size == 0 ? 1 : size);
    if (pointer == NULL) {
        fprintf(stderr, "error: out of memory allocating %zu bytes at %s:%d\n", size, file, line);
        exit(EXIT_FAILURE);
    }
    return pointer;
}

void* checked_calloc(size_t count, size_t size, const char* file, int line) {
    void* pointer = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
    if (pointer == NULL) {
        fprintf(stderr, "error: out of memory allocating %zu x %zu bytes at %s:%d\n", count, size, file, line);
        exit(EXIT_FAILURE);
    }
    return pointer;
}

char* string_copy(const char* text) {
    size_t n = strlen(text) + 1;
    char* copy = mallocCheck(n);
    memcpy(copy, text, n);
    return copy;
}

const char* printable_text(const char* text, char* out, size_t size) {
    if (size == 0) { return out; }
    size_t used = 0;
    for (const unsigned char* c = (const unsigned char*)text; *c; c++) {
        // C0 controls and DEL, and the C1 controls as UTF-8 encodes them (C2 80 to C2 9F: U+009B is a CSI
        // that some terminals act on), each byte shown as \xNN
        int c1 = *c == 0xC2 && c[1] >= 0x80 && c[1] <= 0x9F;
        int control = *c < 0x20 || *c == 0x7F;
        // the room this byte takes, at a UTF-8 lead byte its whole character's (its continuation bytes then fit),
        // and after it room for "..." and the NUL
        size_t need = c1 ? 8 : control ? 4 : *c >= 0xF0 ? 4 : *c >= 0xE0 ? 3 : *c >= 0xC0 ? 2 : 1;
        if (used + need + 3 >= size) {
            size_t dots = size - 1 - used < 3 ? size - 1 - used : 3;
            memcpy(out + used, "...", dots);
            used += dots;
            break;
        }
        if (c1) { snprintf(out + used, 9, "\\x%02X\\x%02X", c[0], c[1]); used += 8; c++; }
        else if (control) { snprintf(out + used, 5, "\\x%02X", *c); used += 4; }
        else { out[used++] = (char)*c; }
    }
    out[used] = '\0';
    return out;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// VmRSS and VmHWM of /proc/self/status (Linux), in kB; -1 where unavailable.
void resident_memory_kb(long* current, long* peak) {
    *current = -1;
    *peak = -1;
    FILE* f = fopen("/proc/self/status", "r");
    if (f == NULL) { return; }
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) { *current = strtol(line + 6, NULL, 10); }
        if (strncmp(line, "VmHWM:", 6) == 0) { *peak = strtol(line + 6, NULL, 10); }
    }
    fclose(f);
}

// ----------------------------------------------------------------------------
// input files

int open_regular_file(const char* path, size_t* size, Error* err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { return error_set(err, "%s: cannot open: %s", path, strerror(errno)); }
    struct stat info;
    if (fstat(fd, &info) != 0) {
        int saved = errno;
        close(fd);
        return error_set(err, "%s: cannot stat: %s", path, strerror(saved));
    }
    if (!S_ISREG(info.st_mode)) {
        close(fd);
        const char* kind = S_ISDIR(info.st_mode) ? "a directory" : S_ISFIFO(info.st_mode) ? "a FIFO (named pipe)"
                         : S_ISCHR(info.st_mode) ? "a character device" : S_ISSOCK(info.st_mode) ? "a socket" : "not a regular file";
        return error_set(err, "%s: is %s; expected a regular file", path, kind);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) { fcntl(fd, F_SETFL, flags & ~O_NONBLOCK); }
    if (size) { *size = (size_t)info.st_size; }
    return fd;
}

int read_text_file(const char* path, size_t max_bytes, char** text, size_t* length, Error* err) {
    size_t size = 0;
    int fd = open_regular_file(path, &size, err);
    if (fd < 0) { return -1; }
    if (size > max_bytes) {
        close(fd);
        return error_set(err, "%s: is %zu bytes; expected at most %zu bytes", path, size, max_bytes);
    }
    char* buffer = mallocCheck(size + 1);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buffer + got, size - got);
        if (n < 0 && errno == EINTR) { continue; }
        if (n <= 0) { // an error, or the file shrank while we read it
            int saved = errno;
            free(buffer);
            close(fd);
            return error_set(err, "%s: read error: %s", path, n < 0 ? strerror(saved) : "the file is shorter than its size");
        }
        got += (size_t)n;
    }
    close(fd);
    buffer[size] = '\0';
    *text = buffer;
    if (length) { *length = size; }
    return 0;
}

// ----------------------------------------------------------------------------
// output files and directories

// rmdir of the created directories at and above the component of path that ends at offset end (see
// remove_directories)
static void remove_directories_of(const char* path, size_t end, int created) {
    char* copy = mallocCheck(end + 1);
    memcpy(copy, path, end);
    copy[end] = '\0';
    for (int i = 0; i < created; i++) {
        if (rmdir(copy) != 0) { break; }   // not empty (or gone): it and those above it stay
        char* slash = strrchr(copy, '/');
        while (slash != NULL && slash > copy && slash[-1] == '/') { slash--; }
        if (slash == NULL || slash == copy) { break; }
        *slash = '\0';
    }
    free(copy);
}

void remove_directories(const char* path, int created) {
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') { end--; }
    remove_directories_of(path, end, created);
}

int make_directories(const char* path, Error* err) { return make_directories_counted(path, NULL, err); }

int make_directories_counted(const char* path, int* created, Error* err) {
    if (created) { *created = 0; }
    size_t n = strlen(path);
    if (n == 0) { return error_set(err, "empty directory name"); }
    char* copy = mallocCheck(n + 1);
    memcpy(copy, path, n + 1);
    int made = 0;          // trailing components created (once one is made, every one below it is)
    size_t last_end = 0;   // where the last component made or found ends
    for (size_t i = 1; i <= n; i++) {
        if (copy[i] != '/' && copy[i] != '\0') { continue; }
        if (copy[i - 1] == '/') { continue; }   // ("a//b": one component)
        char saved = copy[i];
        copy[i] = '\0';
        if (mkdir(copy, 0777) == 0) {
            made++;
        } else if (errno != EEXIST) {
            int e = errno;
            error_set(err, "%s: cannot create the directory: %s", copy, strerror(e));
            free(copy);
            if (made > 0) { remove_directories_of(path, last_end, made); }   // nothing half made is left
            return -1;
        }
        copy[i] = saved;
        last_end = i;
    }
    if (created) { *created = made; }
    struct stat info;
    int is_directory = stat(path, &info) == 0 && S_ISDIR(info.st_mode);
    free(copy);
    if (!is_directory) { return error_set(err, "%s: exists and is not a directory", path); }
    return 0;
}

// The length of the valid UTF-8 sequence at s (n bytes available), or 0 if it is not one (overlong forms,
// surrogates and code points above U+10FFFF are not).
size_t utf8_valid_length(const unsigned char* s, size_t n) {
    if (n == 0) { return 0; }
    if (s[0] < 0x80) { return 1; }
    size_t length;
    uint32_t cp, min;
    if ((s[0] & 0xE0) == 0xC0) { length = 2; cp = s[0] & 0x1F; min = 0x80; }
    else if ((s[0] & 0xF0) == 0xE0) { length = 3; cp = s[0] & 0x0F; min = 0x800; }
    else if ((s[0] & 0xF8) == 0xF0) { length = 4; cp = s[0] & 0x07; min = 0x10000; }
    else { return 0; }
    if (length > n) { return 0; }
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xC0) != 0x80) { return 0; }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { return 0; }
    return length;
}

// The directory part of path in a malloc'd string ("." for a bare file name).
static char* directory_of(const char* path) {
    char* copy = mallocCheck(strlen(path) + 1);
    strcpy(copy, path);
    char* directory = dirname(copy);
    char* result = mallocCheck(strlen(directory) + 1);
    strcpy(result, directory);
    free(copy);
    return result;
}

// Whether two paths name the same existing file.
static int same_file(const char* a, const char* b) {
    struct stat info_a, info_b;
    return stat(a, &info_a) == 0 && stat(b, &info_b) == 0 && info_a.st_dev == info_b.st_dev && info_a.st_ino == info_b.st_ino;
}

// Whether two paths name the same file, existing or not: the same existing file, or the same name in the
// same existing directory (so an output not written yet is caught, however its directory is spelt).
int same_path(const char* a, const char* b) {
    if (same_file(a, b)) { return 1; }
    char *copy_a = string_copy(a), *copy_b = string_copy(b);
    char *directory_a = directory_of(a), *directory_b = directory_of(b);
    int same = strcmp(basename(copy_a), basename(copy_b)) == 0 && same_file(directory_a, directory_b);
    free(copy_a); free(copy_b); free(directory_a); free(directory_b);
    return same;
}

int path_is_directory(const char* path) {
    struct stat info;
    return stat(path, &info) == 0 && S_ISDIR(info.st_mode);
}

int check_not_input(const char* output, const char* flag, const char* const* inputs, const char* const* input_flags,
                    int n_inputs) {
    char* directory = directory_of(output);
    int status = 0;
    for (int i = 0; i < n_inputs && status == 0; i++) {
        if (inputs[i] && same_file(output, inputs[i])) {
            fprintf(stderr, "error: %s %s is the same file as %s %s; choose another output path\n", flag, output,
                    input_flags[i], inputs[i]);
            status = 1;
        } else if (inputs[i] && path_is_directory(inputs[i]) && same_file(directory, inputs[i])) {
            // an input given as a directory (a SpecForge draft) is read from its files: none may be replaced
            fprintf(stderr, "error: %s %s is inside %s %s, a directory this command reads; choose an output outside it\n",
                    flag, output, input_flags[i], inputs[i]);
            status = 1;
        }
    }
    free(directory);
    return status;
}

int check_writable(const char* path, int create_directory, Error* err) {
    if (path[0] == '\0') { return error_set(err, "empty output path"); }
    char* directory = directory_of(path);
    if (create_directory && make_directories(directory, err) != 0) { free(directory); return -1; }
    free(directory);
    OutputFile probe;
    if (output_open(&probe, path, err) != 0) { return -1; }
    output_abandon(&probe);
    return 0;
}

// The temporary files open now (between output_open and its commit or abandon): a second stop signal
// exits at once and removes them first (unlink is async-signal-safe), so an interrupted run leaves no
// PATH.tmp.PID behind. Slots, not a list: the handler may run while one is added or removed.
enum { OPEN_OUTPUTS_MAX = 16 };
static char* volatile open_outputs[OPEN_OUTPUTS_MAX];
static pthread_mutex_t open_outputs_lock = PTHREAD_MUTEX_INITIALIZER;

static void open_outputs_set(char* from, char* to) {
    pthread_mutex_lock(&open_outputs_lock);
    for (int i = 0; i < OPEN_OUTPUTS_MAX; i++) { if (open_outputs[i] == from) { open_outputs[i] = to; break; } }
    pthread_mutex_unlock(&open_outputs_lock);
}

// What a non-regular file is, for the error that refuses to replace it.
static const char* file_kind(mode_t mode) {
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISCHR(mode) ? "a character device"
         : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ? "a socket" : "not a regular file";
}

// output_open after its temporary file was created: the file closed and removed, nothing left of it
static void output_open_undo(OutputFile* out, int fd) {
    close(fd);
    unlink(out->temporary_path);
    free(out->temporary_path);
    out->temporary_path = NULL;
}

int output_open(OutputFile* out, const char* path, Error* err) {
    memset(out, 0, sizeof(*out));
    // the finished file replaces path by a rename: never a device, a FIFO or a directory (as root, -o
    // /dev/null would otherwise become a regular file)
    struct stat existing;
    int exists = stat(path, &existing) == 0;
    if (exists && !S_ISREG(existing.st_mode)) {
        return error_set(err, "%s: is %s; expected a regular file or a new file name", path, file_kind(existing.st_mode));
    }
    size_t n = strlen(path) + 32;
    out->temporary_path = mallocCheck(n);
    snprintf(out->temporary_path, n, "%s.tmp.%ld", path, (long)getpid());
    // created new, never through a link: in a shared directory (-o /tmp/x) a link planted at the
    // predictable name would otherwise have its target truncated. A leftover of that name (an earlier
    // run with this process id, or such a link) is removed, the link itself and not what it names, and
    // the file created again; if something puts it back in between, the open fails.
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(out->temporary_path, flags, 0666);
    if (fd < 0 && errno == EEXIST && unlink(out->temporary_path) == 0) { fd = open(out->temporary_path, flags, 0666); }
    if (fd < 0) {
        int e = errno;
        free(out->temporary_path);
        out->temporary_path = NULL;
        return error_set(err, "%s: cannot write: %s", path, strerror(e));
    }
    // the file it replaces keeps its permissions (a draft kept at 0600 does not become 0644); never the
    // set-id bits
    if (exists && fchmod(fd, existing.st_mode & 0777) != 0) {
        int e = errno;
        output_open_undo(out, fd);
        return error_set(err, "%s: cannot set the permissions of its replacement: %s", path, strerror(e));
    }
    out->stream = fdopen(fd, "wb");
    if (out->stream == NULL) {
        output_open_undo(out, fd);
        return error_set(err, "%s: cannot write: out of memory", path);
    }
    out->path = mallocCheck(strlen(path) + 1);
    strcpy(out->path, path);
    open_outputs_set(NULL, out->temporary_path);
    return 0;
}

static void output_release(OutputFile* out) {
    if (out->temporary_path) { open_outputs_set(out->temporary_path, NULL); }
    free(out->path);
    free(out->temporary_path);
    memset(out, 0, sizeof(*out));
}

void output_abandon(OutputFile* out) {
    if (out->stream) { fclose(out->stream); }
    if (out->temporary_path) { unlink(out->temporary_path); }
    output_release(out);
}

// A failed commit: the temporary file removed, the error naming the target (errno saved, 0 if unknown).
static int output_fail(OutputFile* out, int saved, Error* err) {
    unlink(out->temporary_path);
    error_set(err, "%s: write failed: %s (the previous file, if any, is unchanged)", out->path,
              saved ? strerror(saved) : "an earlier write to it failed");
    output_release(out);
    return -1;
}

int output_finish(OutputFile* out, Error* err) {
    if (out->stream == NULL) { return 0; }   // finished already
    // (a write that failed earlier left the stream's error flag set, and its errno is long gone: the cause is
    // named only when this flush is what fails)
    int flushed = fflush(out->stream) == 0, saved = flushed ? 0 : errno;
    int failed = !flushed || ferror(out->stream);
    if (!failed && fsync(fileno(out->stream)) != 0 && errno != EINVAL && errno != EROFS) { failed = 1; saved = errno; }
    if (fclose(out->stream) != 0 && !failed) { failed = 1; saved = errno; }
    out->stream = NULL;
    return failed ? output_fail(out, saved, err) : 0;
}

int output_commit(OutputFile* out, Error* err) {
    if (output_finish(out, err) != 0) { return -1; }
    if (rename(out->temporary_path, out->path) != 0) { return output_fail(out, errno, err); }
    output_release(out);
    return 0;
}

int write_file_atomic(const char* path, const void* bytes, size_t n, Error* err) {
    OutputFile out;
    if (output_open(&out, path, err) != 0) { return -1; }
    if (n > 0 && fwrite(bytes, 1, n, out.stream) != n) {
        int e = errno;
        output_abandon(&out);
        return error_set(err, "%s: write failed: %s (the previous file, if any, is unchanged)", path, strerror(e));
    }
    return output_commit(&out, err);
}

// ----------------------------------------------------------------------------
// stopping a long run cleanly: the first SIGINT/SIGTERM asks the run to stop after the request (or
// training step) in flight and save everything as for a normal end; a second one exits at once.

static volatile sig_atomic_t stop_signal_number = 0;

// Removes the temporary files open now (unlink is async-signal-safe): at a second signal, and at an exit the
// program did not plan (out of memory in checked_malloc, an internal error's exit(EXIT_FAILURE), from any thread:
// exit_signals_install registers it with atexit, under the registry's lock). After a normal end none is open.
static void remove_open_outputs(void) {
    for (int i = 0; i < OPEN_OUTPUTS_MAX; i++) {
        char* path = open_outputs[i];
        if (path) { unlink(path); }
    }
}

// Exits at once, removing the temporary files open now (unlink and _exit are async-signal-safe).
static void on_exit_signal(int signal_number) {
    remove_open_outputs();
    _exit(128 + signal_number);
}

static void on_stop_signal(int signal_number) {
    if (stop_signal_number != 0) { on_exit_signal(signal_number); }
    stop_signal_number = signal_number;
    static const char note[] = "\ninterrupted: finishing the work in flight, then saving (a second signal exits at once)\n";
    ssize_t ignored = write(STDERR_FILENO, note, sizeof(note) - 1);
    (void)ignored;
}

// SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) take the handler. A closed pipe (SIGPIPE:
// `| tee log` ended by the same Ctrl-C, or `| head`) exits as it would, removing the temporary files, except
// during a long run's gentle stop, where it is ignored: a write to the pipe then fails, and the run goes on to
// save what it trained rather than die on its next line of progress.
static void signals_set(void (*handler)(int), int ignore_closed_pipe) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    if (ignore_closed_pipe) { action.sa_handler = SIG_IGN; }
    else { action.sa_handler = on_exit_signal; }
    sigaction(SIGPIPE, &action, NULL);
}

// (at exit, from any thread: under the registry's lock, so that no output is released while its name is read)
static void remove_open_outputs_at_exit(void) {
    pthread_mutex_lock(&open_outputs_lock);
    remove_open_outputs();
    pthread_mutex_unlock(&open_outputs_lock);
}

void exit_signals_install(void) {
    signals_set(on_exit_signal, 0);
    static int registered = 0;
    if (!registered) { registered = 1; atexit(remove_open_outputs_at_exit); }
}

void stop_signals_install(void) {
    stop_signal_number = 0;
    signals_set(on_stop_signal, 1);
}

void stop_signals_restore(void) { signals_set(on_exit_signal, 0); }

int stop_requested(void) { return stop_signal_number; }
