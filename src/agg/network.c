/* network.c -- sorting networks pruned to the order statistics a rule needs.
 *
 * A comparator (a, b) with a < b puts min on wire a and max on wire b. Run
 * on vectors, each comparator is one min and one max over 16 coordinates at
 * once, with no branches: this is how the median and trimmed mean sort the n
 * values of 16 coordinates together (order.c).
 *
 * The network is Batcher's odd-even merge sort on the next power of two P >=
 * wires; the missing wires are taken to hold +infinity, which no comparator
 * ever moves, so comparators that touch them are dropped. It is then pruned
 * backwards: a comparator is kept only if an output the rule reads depends
 * on it. Outputs come in two kinds: EXACT wires must hold their sorted value;
 * GROUP wires must together hold the right set of values (a trimmed mean
 * only sums the middle values, so their relative order is never needed).
 * Walking backwards, a comparator whose wires are both unneeded, or both in
 * the group, is dropped (the latter only permutes the group); any other is
 * kept and makes both of its input wires EXACT. */
#include "agg/agg_internal.h"

void agg_network_build(AggNetwork *network, size_t wires, const unsigned char *labels) {
    uint8_t all[AGG_NETWORK_MAX_COMPARATORS][2];
    size_t count = 0;
    size_t power = 1;
    while (power < wires) power <<= 1;
    for (size_t p = 1; p < power; p <<= 1)
        for (size_t k = p; k >= 1; k >>= 1)
            for (size_t j = k % p; j + k < power; j += 2 * k)
                for (size_t i = 0; i < k && i + j + k < power; i++)
                    if ((i + j) / (2 * p) == (i + j + k) / (2 * p) && i + j + k < wires &&
                        count < AGG_NETWORK_MAX_COMPARATORS) {
                        all[count][0] = (uint8_t)(i + j);
                        all[count][1] = (uint8_t)(i + j + k);
                        count++;
                    }

    unsigned char label[AGG_NETWORK_MAX_WIRES];
    unsigned char keep[AGG_NETWORK_MAX_COMPARATORS];
    for (size_t w = 0; w < wires; w++) label[w] = labels[w];
    for (size_t t = count; t-- > 0;) {
        unsigned char a = label[all[t][0]], b = label[all[t][1]];
        keep[t] = !((a == AGG_WIRE_FREE && b == AGG_WIRE_FREE) || (a == AGG_WIRE_GROUP && b == AGG_WIRE_GROUP));
        if (keep[t]) label[all[t][0]] = label[all[t][1]] = AGG_WIRE_EXACT;
    }
    network->wires = wires;
    network->count = 0;
    for (size_t t = 0; t < count; t++)
        if (keep[t]) {
            network->pairs[network->count][0] = all[t][0];
            network->pairs[network->count][1] = all[t][1];
            network->count++;
        }
}
