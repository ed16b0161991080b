// AVX-512 helpers both C++ kernels share (decoder_kernels.cpp, cpu_attention.cpp); cpp_build.py copies this header
// beside each source it builds.
#pragma once
#include <immintrin.h>

#include <cstdint>

// Lanes 0..n-1 of 16 (all for n >= 16, none for n <= 0): the mask of a loop's last, partial vector.
static inline __mmask16 first(int64_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : (n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1));
}

// 2^t on 16 float32 lanes as 2^n 2^f, n = round(t) and f = t - n in [-1/2, 1/2] (exact in float32), 2^f by the
// polynomial `c` (highest degree first), 2^n applied by scalef: about 0 below t = -126 (as exp underflows), inf
// above 128 (as it overflows). t must not be NaN or infinite.
template <int N>
static inline __m512 exp2_polynomial(__m512 t, const float (&c)[N]) {
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(c[0]);
  for (int i = 1; i < N; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
  return _mm512_scalef_ps(p, n);
}

// 2^t to float32's precision: the exponential of the SwiGLU gate's silu and of the decoding attention's softmax.
// Degree 5, fitted for relative error (7.5e-8 at most: below float32's own rounding).
static inline __m512 exp2_float(__m512 t) {
  static constexpr float c[] = {1.327647129e-03f, 9.675540961e-03f, 5.550713092e-02f, 2.402212024e-01f,
                                6.931469440e-01f, 1.000000119e+00f};
  return exp2_polynomial(t, c);
}

// 2^t for values that are then rounded to bfloat16 (the CPU attention kernel's softmax numerators): degree 3, relative
// error 7.5e-5 at most, 50 x below bfloat16's rounding; two multiply-adds fewer per 16 values than exp2_float.
static inline __m512 exp2_for_bf16(__m512 t) {
  static constexpr float c[] = {5.517161e-02f, 2.4261112e-01f, 6.93261e-01f, 9.9992807e-01f};
  return exp2_polynomial(t, c);
}
