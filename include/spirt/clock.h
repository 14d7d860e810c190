/* clock.h -- monotonic and wall clocks, and sleeping. */
#ifndef SPIRT_CLOCK_H
#define SPIRT_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Nanoseconds from an arbitrary fixed point; never goes backwards. For
 * durations and deadlines. */
uint64_t clock_monotonic_ns(void);
/* The same in milliseconds, as a double, for printing durations. */
double clock_monotonic_ms(void);
/* Milliseconds since the Unix epoch (wall time, for logs and records). */
int64_t clock_wall_ms(void);
/* Sleeps at least `milliseconds`, resuming after signals. */
void clock_sleep_ms(double milliseconds);

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_CLOCK_H */
