/* simd.h -- the vector operations the nn engine's micro-kernels use
 * (internal to src/nn): one float vector type and six operations, mapped
 * to AVX-512, AVX2 + FMA, or portable GCC vectors by the build's target.
 *
 * Only the micro-kernels (gemm.c, conv_gemm.c) include this; everything
 * else is plain C. With SPIRT_NATIVE=ON (the default) the target is the
 * building machine. The portable fallback has no fused multiply-add
 * (separate multiply and add, exactly as the C says), so results differ in
 * the last bits between targets -- never between runs of one build. */
#ifndef SPIRT_NN_SIMD_H
#define SPIRT_NN_SIMD_H

#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define SIMD_WIDTH 16    /* floats per vector */
#define SIMD_REGISTERS 32
typedef __m512 Vec;
static inline Vec vec_zero(void) { return _mm512_setzero_ps(); }
static inline Vec vec_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vec_store(float *p, Vec v) { _mm512_storeu_ps(p, v); }
static inline Vec vec_broadcast(float x) { return _mm512_set1_ps(x); }
static inline Vec vec_fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline Vec vec_add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
#define SIMD_NAME "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SIMD_WIDTH 8
#define SIMD_REGISTERS 16
typedef __m256 Vec;
static inline Vec vec_zero(void) { return _mm256_setzero_ps(); }
static inline Vec vec_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vec_store(float *p, Vec v) { _mm256_storeu_ps(p, v); }
static inline Vec vec_broadcast(float x) { return _mm256_set1_ps(x); }
static inline Vec vec_fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline Vec vec_add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
#define SIMD_NAME "avx2"
#else
#define SIMD_WIDTH 4
#define SIMD_REGISTERS 16
typedef float Vec __attribute__((vector_size(16)));
static inline Vec vec_zero(void) { return (Vec){0}; }
static inline Vec vec_load(const float *p) {
    Vec v;
    memcpy(&v, p, sizeof(v));
    return v;
}
static inline void vec_store(float *p, Vec v) { memcpy(p, &v, sizeof(v)); }
static inline Vec vec_broadcast(float x) { return (Vec){0} + x; }
static inline Vec vec_fma(Vec a, Vec b, Vec c) { return a * b + c; }
static inline Vec vec_add(Vec a, Vec b) { return a + b; }
#define SIMD_NAME "generic"
#endif

#endif /* SPIRT_NN_SIMD_H */
