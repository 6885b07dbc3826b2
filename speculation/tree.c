/*
tree.c: a draft tree, described once (each node's token and parent), and every buffer derived from that
description by one function (tree_derive): depths, positions, the ancestor matrix, children, leaves and
root-to-leaf paths; and the attention mask of a verify pass over the tree.

One speculative step, with its data (the files of speculation/):

    sequence:  x_0 ... x_{m-1} | x_m                 x_m: the root, decided but not yet run by the target
    draft:     a tree of guesses for x_{m+1}, x_{m+2}, ... hanging from the root (drafting.c)
    verify:    ONE target pass over the N tree nodes at positions m + depth, tree attention mask (this file)
    accept:    walk from the root while the target agrees (acceptance.c), then the bonus token from the
               target's distribution at the last accepted node
    commit:    keep the accepted path's keys/values (kv compaction), append path tokens + bonus (generate.c)

Contract: tree_derive is the only place tree buffers are computed; everything reads them from the Tree.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// the tree and its buffers
//
// Example: N = 6 nodes, K = 2 children per node, depth 3, root at position m:
//
//   node:      0          parents: {-1, 0, 0, 1, 1, 3}      positions: m + depth
//            /   \                                          0:m  1:m+1  2:m+1  3:m+2  4:m+2  5:m+3
//           1     2       ancestor mask (row i: what node i may attend to among the tree nodes):
//          / \                  0 1 2 3 4 5
//         3   4            0  [ 1 . . . . . ]       paths (root to leaf):  0-2, 0-1-4, 0-1-3-5
//         |                1  [ 1 1 . . . . ]       leaves: 2, 4, 5
//         5                2  [ 1 . 1 . . . ]
//                          3  [ 1 1 . 1 . . ]       In the verify pass every node also sees all of
//                          4  [ 1 1 . . 1 . ]       the cached prefix (tree_attention_mask).
//                          5  [ 1 1 . 1 . 1 ]

int tree_derive(Tree* tree, Error* err) {
    int N = tree->n_nodes;
    if (N < 1 || N > TREE_MAX_NODES) { return error_set(err, "tree has %d nodes, expected 1..%d", N, TREE_MAX_NODES); }
    if (tree->parents[0] != -1) { return error_set(err, "tree node 0 must be the root (parent -1), has parent %d", tree->parents[0]); }
    memset(tree->ancestor, 0, (size_t)N * N);
    tree->max_depth = 0;
    for (int i = 0; i < N; i++) {
        int parent = tree->parents[i];
        if (i > 0 && (parent < 0 || parent >= i)) {
            return error_set(err, "tree node %d has parent %d, expected a node in [0, %d) (parents come before children)", i, parent, i);
        }
        tree->depth[i] = i == 0 ? 0 : tree->depth[parent] + 1;
        if (tree->depth[i] > TREE_MAX_DEPTH) {
            return error_set(err, "tree node %d is at depth %d, deeper than TREE_MAX_DEPTH %d", i, tree->depth[i], TREE_MAX_DEPTH);
        }
        if (tree->depth[i] > tree->max_depth) { tree->max_depth = tree->depth[i]; }
        tree->positions[i] = tree->root_position + tree->depth[i];
        // a node sees what its parent sees, and itself
        if (i > 0) { memcpy(tree->ancestor + (size_t)i * N, tree->ancestor + (size_t)parent * N, (size_t)N); }
        tree->ancestor[(size_t)i * N + i] = 1;
        tree->n_children[i] = 0;
        if (i > 0) { tree->children[parent][tree->n_children[parent]++] = i; }
    }
    tree->n_leaves = 0;
    for (int i = 0; i < N; i++) {
        if (tree->n_children[i] != 0) { continue; }
        int leaf = tree->n_leaves++;
        tree->leaves[leaf] = i;
        tree->path_length[leaf] = tree->depth[i] + 1;
        for (int node = i; node >= 0; node = tree->parents[node]) { tree->paths[leaf][tree->depth[node]] = node; }
    }
    return 0;
}

void tree_attention_mask(uint8_t* mask, const Tree* tree, int n_prefix) {
    // mask: (N, n_prefix + N)
    int N = tree->n_nodes, P = n_prefix + N;
    for (int i = 0; i < N; i++) {
        memset(mask + (size_t)i * P, 1, (size_t)n_prefix);
        memcpy(mask + (size_t)i * P + n_prefix, tree->ancestor + (size_t)i * N, (size_t)N);
    }
}
