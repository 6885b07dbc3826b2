/*
backends.c: the backend registry, the OpenBLAS table, and helpers every table shares.

A backend is a table of function pointers (aurora.h, section "backends"): memory and every op with the
reference's signature. The tables: backend_cpu_ref (cpu_ref.c, the oracle), backend_cpu_blas (here: the
reference with OpenBLAS matmuls, forward and backward), and CUDA's (kernels.cu, reached through
backend_cuda()). backend_by_name is the one place that knows which tables this build has: it holds the
only #ifdef USE_CUDA outside kernels.cu.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// helpers shared by every table

size_t element_size(ElementKind kind) {
    return kind == ELEMENT_F32 ? sizeof(float) : kind == ELEMENT_I32 ? sizeof(int) : sizeof(uint8_t);
}

void* backend_host_buffer(const Backend* backend, void* backend_buffer, size_t bytes) {
    return backend->host_memory ? backend_buffer : mallocCheck(bytes > 0 ? bytes : 1);
}

void backend_free_host_buffer(const Backend* backend, void* host_buffer) {
    if (!backend->host_memory) { free(host_buffer); }
}

void matrix_to_host_f32(const Backend* backend, Matrix matrix, int rows, int cols, float* out) {
    size_t n = (size_t)rows * cols;
    if (matrix.type == TYPE_F32) { backend->download(out, matrix.data, n * sizeof(float)); return; }
    if (fast_is_packed(matrix.type)) {   // the fast int8 table's packed form (host memory)
        for (int r = 0; r < rows; r++) { fast_packed_dequantize_row(out + (size_t)r * cols, matrix.data, matrix.type, cols, r); }
        return;
    }
    size_t bytes = tensor_bytes(matrix.type, (int64_t)n);
    void* raw = mallocCheck(bytes > 0 ? bytes : 1);
    backend->download(raw, matrix.data, bytes);
    dequantize_row(matrix.type, raw, out, (int64_t)n);
    free(raw);
}

// ----------------------------------------------------------------------------
// OpenBLAS: the reference with sgemm for the matmuls (the reference stays the definition; the two are
// checked against each other in tests/test_ops.c and tests/test_backends.c)

#ifdef USE_BLAS
// One threading system. OpenMP's idle workers spin after each parallel region, and OpenBLAS's own
// threads would fight them for the cores (measured: decode at half speed on 2 cores). So with OpenMP,
// OpenBLAS runs single-threaded and OpenMP splits the output columns between threads.
static void blas_use_one_thread(void) {
#ifdef _OPENMP
    static int done = 0; // openblas_set_num_threads is idempotent: a race here is harmless
    if (!done) { openblas_set_num_threads(1); done = 1; }
#endif
}

static void matmul_forward_blas(float* out, const float* inp, Matrix weight_matrix, int T, int C, int OC) {
    // out: (T, OC); inp: (T, C); weight: (OC, C) fp32
    if (weight_matrix.type != TYPE_F32) { matmul_forward_cpu(out, inp, weight_matrix, T, C, OC); return; } // reports the internal error
    const float* weight = weight_matrix.data;
    blas_use_one_thread();
    int n_parts = 1;
#ifdef _OPENMP
    n_parts = omp_get_max_threads();
    if (n_parts > OC) { n_parts = OC; }
#endif
    if ((long)T * OC * C < PARALLEL_MIN_WORK) { n_parts = 1; }
    #pragma omp parallel for if (n_parts > 1)
    for (int part = 0; part < n_parts; part++) {
        int first = (int)((long)OC * part / n_parts), last = (int)((long)OC * (part + 1) / n_parts);
        // out[:, first:last] (T, last-first) = inp (T, C) @ weight[first:last]^T (C, last-first)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, last - first, C,
                    1.0f, inp, C, weight + (size_t)first * C, C, 0.0f, out + first, OC);
    }
}

// matmul_backward_cpu through sgemm: dinp (T, C) += dout (T, OC) @ weight (OC, C) and
// dweight (OC, C) += dout^T @ inp (T, C); NULL skips, as in the reference.
static void matmul_backward_blas(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          int T, int C, int OC) {
    blas_use_one_thread();
    if (dinp) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    }
    if (dweight) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, T, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    }
}

const Backend backend_cpu_blas = {
    .name = "cpu-blas", .device = "CPU", .host_memory = 1,
    .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy, .download = cpu_copy, .copy = cpu_copy, .zero = cpu_zero,
    .upload_matrix = cpu_upload_matrix_f32, .free_matrix = cpu_free_matrix,
    .embedding_forward = embedding_forward_cpu, .rmsnorm_forward = rmsnorm_forward_cpu,
    .matmul_forward = matmul_forward_blas, .rope_forward = rope_forward_cpu,
    .attention_forward = attention_forward_cpu, .swiglu_forward = swiglu_forward_cpu,
    .residual_forward = residual_forward_cpu, .softmax_forward = softmax_forward_cpu, .kv_compact = kv_compact_cpu,
    .matmul_backward = matmul_backward_blas, .rmsnorm_backward = rmsnorm_backward_cpu,
    .rope_backward = rope_backward_cpu, .attention_backward = attention_backward_cpu,
    .swiglu_backward = swiglu_backward_cpu, .distribution_loss = distribution_loss_cpu,
    .adamw_update = adamw_update_cpu, .sum_squares = sum_squares_cpu,
    .gather_rows = gather_rows_cpu, .scatter_add_rows = scatter_add_rows_cpu,
    .copy_strided = copy_strided_cpu, .cache_store = cache_store_cpu, .argmax_rows = argmax_rows_cpu,
};
#endif

// ----------------------------------------------------------------------------
// the registry

void backend_matmuls(const Backend* backend, float* const* outs, const float* inp, const Matrix* weights,
                     const int* OCs, int n, int T, int C) {
    if (backend->matmul_forward_shared != NULL) { backend->matmul_forward_shared(outs, inp, weights, OCs, n, T, C); return; }
    for (int i = 0; i < n; i++) { backend->matmul_forward(outs[i], inp, weights[i], T, C, OCs[i]); }
}

void backend_attention_spans(const Backend* backend, float* out, const float* q, const float* key_cache,
                             const float* value_cache, const uint8_t* mask, const SequenceSpan* spans, int n_spans, int NH,
                             int NKV, int HS, CacheLayout layout) {
    if (backend->attention_forward_spans != NULL && n_spans > 1) {   // (one span: the op made for it)
        backend->attention_forward_spans(out, q, key_cache, value_cache, mask, spans, n_spans, NH, NKV, HS, layout);
        return;
    }
    size_t mask_offset = 0, QD = (size_t)NH * HS;
    for (int i = 0; i < n_spans; i++) {
        const SequenceSpan* s = &spans[i];
        size_t base = (size_t)s->base * layout.slot_stride;
        backend->attention_forward(out + s->row * QD, q + s->row * QD, key_cache + base, value_cache + base,
                                   mask + mask_offset, s->n, s->n_past + s->n, NH, NKV, HS, layout);
        mask_offset += span_mask_bytes(s);
    }
}

void backend_describe(const Backend* backend, char* text, size_t size) {
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    if (backend == &backend_cpu_fast || backend == &backend_cpu_fast_exact || backend == &backend_cpu_fast_bf16) {
        int isa = fast_isa_current();
        snprintf(text, size, "%s (%s, %s activations on quantised weights%s), %d threads", backend->name, fast_isa_name(isa),
                 backend != &backend_cpu_fast_exact && fast_isa_has_int8(isa) ? "int8" : "fp32",
                 backend != &backend_cpu_fast_bf16 ? ""
                 : fast_bf16_amx()                  ? ", bf16 products on fp32 weights (AMX)"
                 : fast_bf16_native()               ? ", bf16 products on fp32 weights (AVX-512 BF16)"
                                                    : ", bf16 products on fp32 weights (portable C)",
                 threads);
    } else {
        snprintf(text, size, "%s (%s), %d threads", backend->name, backend->device, threads);
    }
}

const Backend* backend_bf16_twin(const Backend* serving, Error* err) {
    if (serving == &backend_cpu_fast || serving == &backend_cpu_fast_bf16) { return &backend_cpu_fast_bf16; }
    error_set(err, "bf16 products run on the fast CPU table only (--backend cpu or fast), not on %s", serving->name);
    return NULL;
}

const Backend* backend_cpu(void) {
    return &backend_cpu_fast;
}

const Backend* backend_by_name(const char* name, Error* err) {
    if (strcmp(name, "cpu") == 0) { return backend_cpu(); }
    if (strcmp(name, "fast") == 0) { return &backend_cpu_fast; }
    if (strcmp(name, "fast-exact") == 0) { return &backend_cpu_fast_exact; }
    if (strcmp(name, "ref") == 0) { return &backend_cpu_ref; }
    if (strcmp(name, "blas") == 0) {
#ifdef USE_BLAS
        return &backend_cpu_blas;
#else
        error_set(err, "backend 'blas': this binary was built without OpenBLAS (not found, or NO_BLAS=1); "
                  "install libopenblas-dev and rebuild, or use 'cpu'");
        return NULL;
#endif
    }
    if (strcmp(name, "cuda") == 0) {
#ifdef USE_CUDA
        return backend_cuda(err);
#else
        error_set(err, "backend 'cuda': this binary was built without CUDA (nvcc was not found, or NO_CUDA=1); "
                  "rebuild with the CUDA toolkit installed, or use 'cpu'");
        return NULL;
#endif
    }
    error_set(err, "unknown backend '%s', expected cpu, fast, fast-exact, ref, blas or cuda", name);
    return NULL;
}
