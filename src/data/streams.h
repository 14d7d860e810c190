/* streams.h -- the RNG stream numbers of src/data (private).
 *
 * Every seeded operation in src/data draws from rng_init_stream(seed, its
 * own stream), so one run seed can drive the validation split, the
 * partition and the batch order without any two sharing a sequence. The
 * values are ASCII tags; they only have to differ. */
#ifndef SPIRT_DATA_STREAMS_H
#define SPIRT_DATA_STREAMS_H

#define DATA_STREAM_VALIDATION 0x76616c6964617465ull /* "validate" */
#define DATA_STREAM_IID 0x7061727469696400ull        /* "partiid" */
#define DATA_STREAM_DIRICHLET 0x7061727464697200ull  /* "partdir" */
/* The batcher's stream for epoch e is DATA_STREAM_BATCHES + e, so any epoch's
 * order can be rebuilt from (seed, e) alone. */
#define DATA_STREAM_BATCHES 0x6261746368000000ull    /* "batch", low bytes: epoch */

#endif /* SPIRT_DATA_STREAMS_H */
