/*
bench_verify.c: what one verify pass over N tree nodes costs, relative to one single-token decode step.
That ratio bounds every speculative speedup: with acceptance length A and draft cost D (in decode steps),
the speedup is A / (ratio(N) + D). Both are measured side by side in one run, alternating, so the
ratio holds on a shared, noisy machine.

usage: bench_verify MODEL.gguf [--no-blas]      (--no-blas: the reference backend's plain matmuls)
*/
#define TESTING
#include "../aurora.c"

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf [--no-blas]\n", argv[0]); return 2; }
    const Backend* backend = argc > 2 && strcmp(argv[2], "--no-blas") == 0 ? &backend_cpu_ref : backend_cpu();
    Target target;
    Error err;
    if (target_load(&target, argv[1], backend, 512, 64, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    // a 128-token context, so attention over the prefix is part of the cost as in real use
    int n_prefix = 128, V = target.config.vocab_size;
    int prefix[128];
    for (int i = 0; i < n_prefix; i++) { prefix[i] = 200 + (i * 37) % 5000; }
    target_prefill(&target, prefix, n_prefix, 0, NULL, NULL);
    const int sizes[] = {2, 4, 6, 8, 12};
    const int repeats = 8;
    uint8_t* mask = mallocCheck((size_t)16 * (n_prefix + 16));
    printf("verify pass cost relative to one decode step (backend %s, %d cached tokens, %d repeats, chains)\n",
           backend->name, n_prefix, repeats);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int N = sizes[s];
        Tree tree;
        tree.n_nodes = N;
        tree.root_position = n_prefix;
        for (int i = 0; i < N; i++) { tree.tokens[i] = 300 + i; tree.parents[i] = i - 1; }
        tree_derive(&tree, &err);
        tree_attention_mask(mask, &tree, n_prefix);
        double decode_seconds = 0, verify_seconds = 0;
        for (int r = 0; r < repeats; r++) {
            // alternate the two measurements so drift in machine load hits both alike
            int token = 300, position = n_prefix;
            double t0 = now_seconds();
            target_forward(&target, &token, &position, NULL, 1, n_prefix, 0);
            double t1 = now_seconds();
            target_forward(&target, tree.tokens, tree.positions, mask, N, n_prefix, 1);
            double t2 = now_seconds();
            decode_seconds += t1 - t0;
            verify_seconds += t2 - t1;
        }
        printf("  N = %2d nodes: verify %.2f ms, decode %.2f ms, ratio %.2fx\n", N, 1e3 * verify_seconds / repeats,
               1e3 * decode_seconds / repeats, verify_seconds / decode_seconds);
    }
    (void)V;
    free(mask);
    target_free(&target);
    return 0;
}
