/* sort.c -- sorting and selection of doubles without allocation.
 *
 * Krum needs the smallest distances of each row, and the coordinate-wise
 * rules with more inputs than a sorting network handles need order
 * statistics per coordinate. Both use these: in place, deterministic (the
 * same input order gives the same output order), no recursion, no
 * allocation. */
#include "agg/agg_internal.h"

static inline void swap_doubles(double *values, ptrdiff_t a, ptrdiff_t b) {
    double t = values[a];
    values[a] = values[b];
    values[b] = t;
}

/* Orders values[low], values[middle], values[high] and returns the middle
 * one: a pivot with a sentinel at each end of the range. */
static double median_of_three(double *values, ptrdiff_t low, ptrdiff_t middle, ptrdiff_t high) {
    if (values[middle] < values[low]) swap_doubles(values, middle, low);
    if (values[high] < values[low]) swap_doubles(values, high, low);
    if (values[high] < values[middle]) swap_doubles(values, high, middle);
    return values[middle];
}

/* Hoare partition of [low, high] around pivot: afterwards [low, *left_end]
 * <= pivot, [*right_begin, high] >= pivot, and the values strictly between
 * equal the pivot. */
static void partition(double *values, ptrdiff_t low, ptrdiff_t high, double pivot, ptrdiff_t *left_end,
                      ptrdiff_t *right_begin) {
    ptrdiff_t i = low, j = high;
    while (i <= j) {
        while (values[i] < pivot) i++;
        while (pivot < values[j]) j--;
        if (i <= j) {
            swap_doubles(values, i, j);
            i++;
            j--;
        }
    }
    *left_end = j;
    *right_begin = i;
}

void agg_select_doubles(double *values, size_t count, size_t k) {
    if (count < 2 || k >= count) return;
    ptrdiff_t low = 0, high = (ptrdiff_t)count - 1, target = (ptrdiff_t)k;
    while (high - low > 2) {
        double pivot = median_of_three(values, low, low + (high - low) / 2, high);
        ptrdiff_t left_end, right_begin;
        partition(values, low, high, pivot, &left_end, &right_begin);
        if (target <= left_end)
            high = left_end;
        else if (target >= right_begin)
            low = right_begin;
        else
            return; /* target holds the pivot value */
    }
    /* Two or three values left: sort them. */
    for (ptrdiff_t i = low + 1; i <= high; i++)
        for (ptrdiff_t j = i; j > low && values[j] < values[j - 1]; j--) swap_doubles(values, j, j - 1);
}

static void insertion_sort(double *values, ptrdiff_t low, ptrdiff_t high) {
    for (ptrdiff_t i = low + 1; i <= high; i++) {
        double v = values[i];
        ptrdiff_t j = i;
        for (; j > low && v < values[j - 1]; j--) values[j] = values[j - 1];
        values[j] = v;
    }
}

void agg_sort_doubles(double *values, size_t count) {
    if (count < 2) return;
    /* Quicksort that loops on the larger side and keeps the smaller on an
     * explicit stack (depth <= log2(count) < 64). */
    ptrdiff_t stack[2 * 64];
    int top = 0;
    ptrdiff_t low = 0, high = (ptrdiff_t)count - 1;
    for (;;) {
        while (high - low >= 16) {
            double pivot = median_of_three(values, low, low + (high - low) / 2, high);
            ptrdiff_t left_end, right_begin;
            partition(values, low, high, pivot, &left_end, &right_begin);
            if (left_end - low < high - right_begin) {
                stack[top++] = right_begin;
                stack[top++] = high;
                high = left_end;
            } else {
                stack[top++] = low;
                stack[top++] = left_end;
                low = right_begin;
            }
        }
        insertion_sort(values, low, high);
        if (top == 0) break;
        high = stack[--top];
        low = stack[--top];
    }
}
