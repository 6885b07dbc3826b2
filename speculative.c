/*
speculative.c: draft trees, their attention masks, lossless acceptance, and the draft sources.
*/
#include "aurora.h"
