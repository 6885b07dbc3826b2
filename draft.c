/*
draft.c: the EAGLE-3 draft model (see the contract in aurora.h, section "draft model").
*/
#include "aurora.h"
