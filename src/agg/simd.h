/* simd.h -- the short vectors the aggregation kernels are written in.
 *
 * Kernels use GCC vector extensions of 64 bytes (16 floats or 8 doubles):
 * with -march=native on an AVX-512 machine each operation is one zmm
 * instruction; elsewhere GCC splits it into narrower ones, with the same
 * per-lane IEEE arithmetic. Min/max and the fused multiply-add have no
 * vector-extension spelling in C, so they use AVX-512 intrinsics when the
 * compiler targets AVX-512 and a portable form otherwise. Only the Gram
 * kernel uses the fused multiply-add; everywhere else the arithmetic is
 * plain mul/add, identical on every target.
 *
 * Every lane is computed independently: a coordinate's result never depends
 * on which lane or which block it fell in. That is what makes the kernels'
 * output independent of the thread count (see parallel.h). Partial vectors
 * at the end of a row are loaded zero-padded and run through the same code. */
#ifndef SPIRT_AGG_SIMD_H
#define SPIRT_AGG_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h> /* memcpy: unaligned vector loads and stores */

#if defined(__AVX512F__)
#include <immintrin.h>
#else
/* Without AVX-512, GCC warns that passing 64-byte vectors by value has no
 * fixed ABI; these helpers are static and inlined, so no ABI is involved. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define AGG_LANES 16 /* floats per AggF16 */

typedef float AggF16 __attribute__((vector_size(64)));
typedef float AggF8 __attribute__((vector_size(32)));
typedef double AggD8 __attribute__((vector_size(64)));
typedef int32_t AggI16 __attribute__((vector_size(64)));
typedef int64_t AggL8 __attribute__((vector_size(64))); /* lane masks of double compares */

static inline AggF16 f16_load(const float *p) {
    AggF16 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void f16_store(float *p, AggF16 v) { memcpy(p, &v, sizeof(v)); }

/* A store that bypasses the caches (p 64-byte aligned), for output that
 * will not be read back soon; f16_stream_fence() after the last one orders
 * them before whatever the thread does next. A plain store elsewhere. */
static inline void f16_stream(float *p, AggF16 v) {
#if defined(__AVX512F__)
    _mm512_stream_ps(p, (__m512)v);
#else
    f16_store(p, v);
#endif
}

static inline void f16_stream_fence(void) {
#if defined(__AVX512F__)
    _mm_sfence();
#endif
}

/* The first `count` (< 16) floats at p, the other lanes 0. */
static inline AggF16 f16_load_partial(const float *p, size_t count) {
    AggF16 v = {0};
    memcpy(&v, p, count * sizeof(float));
    return v;
}

static inline void f16_store_partial(float *p, AggF16 v, size_t count) { memcpy(p, &v, count * sizeof(float)); }

static inline AggF16 f16_splat(float x) { return (AggF16){0} + x; }

/* Lane-wise minimum and maximum. Inputs are finite (agg refuses NaN); on
 * equal values both forms return the second operand, so the bits agree. */
static inline AggF16 f16_min(AggF16 a, AggF16 b) {
#if defined(__AVX512F__)
    return (AggF16)_mm512_min_ps((__m512)a, (__m512)b);
#else
    AggI16 less = a < b;
    return (AggF16)(((AggI16)a & less) | ((AggI16)b & ~less));
#endif
}

static inline AggF16 f16_max(AggF16 a, AggF16 b) {
#if defined(__AVX512F__)
    return (AggF16)_mm512_max_ps((__m512)a, (__m512)b);
#else
    AggI16 greater = a > b;
    return (AggF16)(((AggI16)a & greater) | ((AggI16)b & ~greater));
#endif
}

/* Lanes 0-7 and 8-15 of a float vector, widened to double. GCC lowers the
 * generic shuffle + convert poorly (extract/convert/insert per 128 bits), so
 * AVX-512 uses the one-instruction conversions. */
static inline AggD8 f16_low_d8(AggF16 v) {
#if defined(__AVX512F__)
    return (AggD8)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)v));
#else
    return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), AggD8);
#endif
}

static inline AggD8 f16_high_d8(AggF16 v) {
#if defined(__AVX512F__)
    return (AggD8)_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1)));
#else
    return __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), AggD8);
#endif
}

/* Two double vectors rounded to one float vector (low lanes first). */
static inline AggF16 d8_pair_to_f16(AggD8 low, AggD8 high) {
#if defined(__AVX512F__)
    __m256 a = _mm512_cvtpd_ps((__m512d)low), b = _mm512_cvtpd_ps((__m512d)high);
    return (AggF16)_mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(a)), _mm256_castps_pd(b), 1));
#else
    AggF8 a = __builtin_convertvector(low, AggF8), b = __builtin_convertvector(high, AggF8);
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#endif
}

static inline AggD8 d8_load(const double *p) {
    AggD8 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void d8_store(double *p, AggD8 v) { memcpy(p, &v, sizeof(v)); }

static inline AggD8 d8_splat(double x) { return (AggD8){0} + x; }

/* The lanes of v where mask is all ones, 0.0 elsewhere. */
static inline AggD8 d8_and(AggD8 v, AggL8 mask) { return (AggD8)((AggL8)v & mask); }

/* c + a * b; fused (one rounding) on AVX-512, mul then add elsewhere. */
static inline AggD8 d8_madd(AggD8 a, AggD8 b, AggD8 c) {
#if defined(__AVX512F__)
    return (AggD8)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#else
    return c + a * b;
#endif
}

/* The sum of the 8 lanes in a fixed order (pairwise), so it is the same
 * wherever it runs. */
static inline double d8_sum(AggD8 v) {
    double a = (v[0] + v[4]) + (v[2] + v[6]);
    double b = (v[1] + v[5]) + (v[3] + v[7]);
    return a + b;
}

#endif /* SPIRT_AGG_SIMD_H */
