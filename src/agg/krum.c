/* krum.c -- Krum scores and the selections of Krum, Multi-Krum and Bulyan
 * (Blanchard et al. 2017; El Mhamdi et al. 2018), from a matrix of squared
 * distances (gram.c, or nnm.c for mixed vectors).
 *
 * score(i) over an active set of r vectors = the sum of the r - f - 2
 * smallest squared distances from i to the others. Bulyan's last Krum picks
 * run on sets smaller than 2f + 3 where r - f - 2 < 1; there the count is
 * clamped at 0 (every score is 0 and the lowest index wins), which is what
 * the definition's empty sum gives. Ties always go to the lowest index, so
 * every peer picks the same vectors. Sums run in ascending order. */
#include <string.h>

#include "agg/agg_internal.h"

size_t agg_krum_scratch_bytes(size_t n) {
    return 2 * agg_align64(n * sizeof(double)) + agg_align64(n * sizeof(uint32_t)) + agg_align64(n);
}

typedef struct KrumScratch {
    double *others;   /* n: one row's distances to the others */
    double *scores;   /* n */
    uint32_t *active; /* n */
    unsigned char *taken;
} KrumScratch;

static KrumScratch krum_scratch(void *scratch, size_t n) {
    unsigned char *p = scratch;
    KrumScratch s;
    s.others = (double *)p;
    p += agg_align64(n * sizeof(double));
    s.scores = (double *)p;
    p += agg_align64(n * sizeof(double));
    s.active = (uint32_t *)p;
    p += agg_align64(n * sizeof(uint32_t));
    s.taken = p;
    return s;
}

void agg_krum_scores(const double *distances, size_t n, const uint32_t *active, size_t active_count, size_t f,
                     double *scores, void *scratch) {
    double *others = scratch;
    size_t nearest = active_count >= f + 2 ? active_count - f - 2 : 0;
    for (size_t a = 0; a < active_count; a++) {
        size_t count = 0;
        for (size_t b = 0; b < active_count; b++)
            if (b != a) others[count++] = distances[(size_t)active[a] * n + active[b]];
        if (nearest < count) agg_select_doubles(others, count, nearest);
        size_t used = nearest < count ? nearest : count;
        agg_sort_doubles(others, used);
        double sum = 0.0;
        for (size_t k = 0; k < used; k++) sum += others[k];
        scores[a] = sum;
    }
}

double agg_krum_select(const double *distances, size_t n, size_t f, size_t m, uint32_t *selected, void *scratch) {
    KrumScratch s = krum_scratch(scratch, n);
    for (size_t i = 0; i < n; i++) s.active[i] = (uint32_t)i;
    agg_krum_scores(distances, n, s.active, n, f, s.scores, s.others);
    memset(s.taken, 0, n);
    double best = 0.0;
    for (size_t pick = 0; pick < m; pick++) {
        size_t winner = n;
        for (size_t i = 0; i < n; i++)
            if (!s.taken[i] && (winner == n || s.scores[i] < s.scores[winner])) winner = i;
        s.taken[winner] = 1;
        selected[pick] = (uint32_t)winner;
        if (pick == 0) best = s.scores[winner];
    }
    return best;
}

double agg_bulyan_select(const double *distances, size_t n, size_t f, uint32_t *selected, void *scratch) {
    KrumScratch s = krum_scratch(scratch, n);
    size_t remaining = n, theta = n - 2 * f;
    for (size_t i = 0; i < n; i++) s.active[i] = (uint32_t)i;
    double first = 0.0;
    for (size_t pick = 0; pick < theta; pick++) {
        agg_krum_scores(distances, n, s.active, remaining, f, s.scores, s.others);
        size_t winner = 0; /* active is ascending: the first minimum is the lowest index */
        for (size_t a = 1; a < remaining; a++)
            if (s.scores[a] < s.scores[winner]) winner = a;
        if (pick == 0) first = s.scores[winner];
        selected[pick] = s.active[winner];
        memmove(s.active + winner, s.active + winner + 1, (remaining - winner - 1) * sizeof(uint32_t));
        remaining--;
    }
    return first;
}
