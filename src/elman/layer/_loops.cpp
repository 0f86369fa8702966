// The two sequential loops of the fused Elman recurrence, compiled for contiguous CPU tensors, and
// dropout.py's dropout.
//
// They compute what `forward_loop` and `backward_loop` in fused.py compute (see there for the equations
// and shapes). On small problems the per-step cost of a tensor operation, not the arithmetic, is most of
// the run time, so here each step multiplies on raw pointers and applies the activation on the same
// pointers (float32: our vectorised tanh_float, float64: MKL's vdTanh), with no tensor created inside the
// float32 and float64 loops. The product: on a CPU with AVX-512, our own kernel over W_hh packed into
// panels once per loop (panel_product, faster than MKL's sgemm at these sizes); elsewhere, and for float64,
// BLAS gemm (the sgemm_/dgemm_ that the torch library carries).
//
// Mixed precision (under torch.autocast with bfloat16): the state and every sum stay float32; only the
// per-step GEMM reads its operands as bfloat16, and its bfloat16 product is added to the float32 sum, as
// the Python loop does: on a CPU with AVX512-BF16 by our kernel (bf16_panel_product), elsewhere through
// ATen's bfloat16 matmul (oneDNN). MKL's cblas_gemm_bf16bf16f32 would accumulate in float32, but on an AMD
// Zen 5 it ran no faster than float32 sgemm: the forward loop over 64 steps of a 64 x 640 batch took 23 ms
// with it and 9 ms with ATen's, and a 3 x 640 language model's training step went from 220 ms to 130 ms.
//
// Row-major (n x H) matrices are column-major (H x n) ones to Fortran BLAS, so
//     C += A W^T   is   gemm('T', 'N', H, n, H, 1, W, H, A, H, 1, C, H)
//     C += A W     is   gemm('N', 'N', H, n, H, 1, W, H, A, H, 1, C, H)

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Weak, so that a torch build without these symbols fails this module's import (the Python loop is used
// then) instead of failing to load.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*) __attribute__((weak));
void vdTanh(int, const double*, double*) __attribute__((weak));
}

namespace {

enum Activation : int64_t { kTanh = 0, kRelu = 1, kSigmoid = 2 };

// Columns [first, last) of c (rows x H) += a (rows x H) . op(w), op(w) = w^T when transpose_w, else w (H x H).
// All row-major: those columns of op(w) are rows first..last of w (w^T), or its columns (w).
void gemm_columns(bool transpose_w, int rows, int H, const float* w, const float* a, float* c, int first, int last) {
  const char transa = transpose_w ? 'T' : 'N', transb = 'N';
  const float one = 1.0f;
  const int n = last - first;
  sgemm_(&transa, &transb, &n, &rows, &H, &one, w + (transpose_w ? static_cast<int64_t>(first) * H : first), &H, a,
         &H, &one, c + first, &H);
}

void gemm_columns(bool transpose_w, int rows, int H, const double* w, const double* a, double* c, int first,
                  int last) {
  const char transa = transpose_w ? 'T' : 'N', transb = 'N';
  const double one = 1.0;
  const int n = last - first;
  dgemm_(&transa, &transb, &n, &rows, &H, &one, w + (transpose_w ? static_cast<int64_t>(first) * H : first), &H, a,
         &H, &one, c + first, &H);
}

// GCC compiles the element loops below for AVX-512, AVX2 and the baseline, and picks one when the module
// loads: the baseline (SSE2) is four floats wide and has no vector 32-bit multiply.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ELMAN_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ELMAN_VECTOR_CLONES
#endif

// float32 -> bfloat16, rounding to nearest even (the values here are finite).
ELMAN_VECTOR_CLONES
void to_bf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    y[i] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  }
}

// c[i] += p[i], p bfloat16.
ELMAN_VECTOR_CLONES
void add_bf16(const uint16_t* p, float* c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    float value;
    std::memcpy(&value, &bits, sizeof value);
    c[i] += value;
  }
}

// tanh in place, float32, for every float32 loop: for |x| < 0.625 the odd polynomial x + x^3 P(x^2) of
// Cephes' tanhf, else 1 - 2 / (exp(2|x|) + 1), the exponential as 2^k exp(r), |r| <= ln(2) / 2, by a
// degree-7 Taylor polynomial; the sign copied from x. Within 1.4 ulp of tanh (MKL's vsTanh: 0.5), and 5x
// faster than vsTanh on one thread, which took ~2.4 of the 8.4 ms of a forward loop over 64 steps of a 64 x
// 640 batch (docs/measurements.md). NaN stays NaN.
ELMAN_VECTOR_CLONES
void tanh_float(float* x, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float a = x[i] < 0 ? -x[i] : x[i];
    a = a > 10.0f ? 10.0f : a;  // tanh(10) is 1 in float32; and exp(20) keeps k in range
    const float z = a * a;
    const float p = ((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f;
    const float near_zero = a + a * z * (p * z - 3.33332819422e-1f);
    const float y = 2.0f * a;
    const float k = (y * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest integer
    const float r = (y - k * 0.693145751953125f) - k * 1.428606765330187e-06f;  // ln 2 in two parts
    const float e = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
                                                                      r * (1.0f / 720 + r * (1.0f / 5040)))))));
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const float away = 1.0f - 2.0f / (e * scale + 1.0f);
    x[i] = std::copysign(a < 0.625f ? near_zero : away, x[i]);
  }
}

// c (rows x H, float32) += a (rows x H, float32) . w_op (H x H, bfloat16), with a read as bfloat16 and the
// product rounded to bfloat16 before the sum (ATen's bfloat16 matmul). Two (B, H) bfloat16 scratch
// buffers, made once per loop, hold the operand and the product, so nothing is allocated per step.
class MixedProduct {
 public:
  MixedProduct(at::Tensor w_op, int64_t batch)
      : w_op_(std::move(w_op)),
        operand_(at::empty({batch, w_op_.size(0)}, w_op_.options())),
        product_(at::empty({batch, w_op_.size(1)}, w_op_.options())) {}

  void accumulate(const float* a, int rows, float* c) {
    const int64_t n = static_cast<int64_t>(rows) * product_.size(1);
    auto* operand = reinterpret_cast<uint16_t*>(operand_.data_ptr<at::BFloat16>());
    to_bf16(a, operand, n);
    const bool all_rows = rows == operand_.size(0);
    at::Tensor product = all_rows ? product_ : product_.narrow(0, 0, rows);
    at::mm_out(product, all_rows ? operand_ : operand_.narrow(0, 0, rows), w_op_);
    add_bf16(reinterpret_cast<const uint16_t*>(product.data_ptr<at::BFloat16>()), c, n);
  }

 private:
  at::Tensor w_op_, operand_, product_;
};

// tanh in place: float32 by tanh_float, on several threads from kTanhSplit values; float64 by MKL's vdTanh.
constexpr int64_t kTanhSplit = 8192;  // ~4 us on one thread, where a split saves more than it costs

void tanh_inplace(float* x, int64_t n) {
  at::parallel_for(0, n, kTanhSplit, [x](int64_t begin, int64_t end) { tanh_float(x, begin, end); });
}

void tanh_inplace(double* x, int64_t n) { vdTanh(static_cast<int>(n), x, x); }

// The activation in place on n values (sigmoid through tanh: sigmoid(x) = (1 + tanh(x / 2)) / 2).
template <typename scalar_t>
void activate_(scalar_t* x, int n, int64_t activation) {
  switch (activation) {
    case kTanh:
      tanh_inplace(x, n);
      break;
    case kRelu:
      for (int i = 0; i < n; ++i) x[i] = x[i] > 0 ? x[i] : scalar_t(0);
      break;
    case kSigmoid:
      for (int i = 0; i < n; ++i) x[i] *= scalar_t(0.5);
      tanh_inplace(x, n);
      for (int i = 0; i < n; ++i) x[i] = scalar_t(0.5) * x[i] + scalar_t(0.5);
      break;
    default:
      TORCH_CHECK(false, "unknown activation code ", activation);
  }
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name, " must be float32 or float64");
  TORCH_CHECK(t.numel() < INT_MAX, name, " is too large for 32-bit BLAS");
}

// batch_sizes must hold T counts of rows in [0, B]: the loops below index by them.
void check_batch_sizes(const std::vector<int64_t>& batch_sizes, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 3 && static_cast<int64_t>(batch_sizes.size()) == t.size(0),
              "batch_sizes must hold one count per time step");
  for (const int64_t rows : batch_sizes) {
    TORCH_CHECK(rows >= 0 && rows <= t.size(1), "batch_sizes counts must lie in [0, batch]");
  }
}

// g[i] *= act'(z) for n values, with act'(z) written in terms of h = act(z): 1 - h^2 (tanh), h (1 - h)
// (sigmoid), h > 0 (relu).
template <typename scalar_t>
void multiply_by_slope(scalar_t* g, const scalar_t* h, int64_t n, int64_t activation) {
  switch (activation) {
    case kTanh:
      for (int64_t i = 0; i < n; ++i) g[i] *= scalar_t(1) - h[i] * h[i];
      break;
    case kRelu:
      for (int64_t i = 0; i < n; ++i) g[i] = h[i] > 0 ? g[i] : scalar_t(0);
      break;
    case kSigmoid:
      for (int64_t i = 0; i < n; ++i) g[i] *= h[i] * (scalar_t(1) - h[i]);
      break;
    default:
      TORCH_CHECK(false, "unknown activation code ", activation);
  }
}

// c[j] += w[j, :] . x for the rows j of w (n x k, row-major) in the blocks of four [first, last): one row x
// of the product x w^T. A row's sum is taken by the same code whichever thread takes its block (a full
// block's four rows together, the rows of a last, partial block one by one), so threads change no bit.
ELMAN_VECTOR_CLONES
void dot_blocks(const float* w, int n, int k, const float* x, float* c, int64_t first, int64_t last) {
  for (int64_t block = first; block < last; ++block) {
    const int64_t j = 4 * block;
    if (j + 4 <= n) {
      const float *w0 = w + j * k, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int i = 0; i < k; ++i) {
        s0 += w0[i] * x[i];
        s1 += w1[i] * x[i];
        s2 += w2[i] * x[i];
        s3 += w3[i] * x[i];
      }
      c[j] += s0;
      c[j + 1] += s1;
      c[j + 2] += s2;
      c[j + 3] += s3;
      continue;
    }
    for (int64_t row = j; row < n; ++row) {
      const float* wr = w + row * k;
      float s = 0;
#pragma omp simd reduction(+ : s)
      for (int i = 0; i < k; ++i) s += wr[i] * x[i];
      c[row] += s;
    }
  }
}

// One layer's products for one row, c (H) += x (I) W_ih^T + h (H) W_hh^T (no x where I is 0), float32: a
// matrix-vector product, memory-bound, where BLAS sgemm took 1.5x the time of dot_blocks on one thread.
// With kSplitWork multiply-adds or more for each thread, the units are split among the threads in blocks of
// four (W_hh at 512 units is 1 MB, a core's L2 cache: halves fit), which leaves each unit's sum as one
// thread takes it.
constexpr int64_t kSplitWork = 24576;  // a split costs what ~24k multiply-adds do (docs/measurements.md)

void one_row_product(const float* w_ih, const float* x, int I, const float* w_hh, const float* h, int H, float* c) {
  const int64_t blocks = (H + 3) / 4;
  const int64_t work = static_cast<int64_t>(H) * (I + H);
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), work / kSplitWork);
  const int64_t grain = threads > 1 ? (blocks + threads - 1) / threads : blocks;  // blocks: one thread
  at::parallel_for(0, blocks, grain, [&](int64_t first, int64_t last) {
    if (I > 0) dot_blocks(w_ih, H, I, x, c, first, last);
    dot_blocks(w_hh, H, H, h, c, first, last);
  });
}

void one_row_product(const double*, const double*, int, const double*, const double*, int, double*) {
  TORCH_CHECK(false, "one_row_product is float32 only");
}

// The recurrent product of a float64 loop, and of a float32 one where the CPU lacks AVX-512 (float32 with
// it: PanelProduct below), c += a W_hh^T (forward) or c += a W_hh (backward), by BLAS, or one_row_product
// for a forward step of one float32 row. From kSplitUnits units the threads split the units (c's columns)
// among them, each one BLAS call on its share: W_hh is then 1 MB or more, a core's L2 cache, and each thread
// keeps its share of W_hh in its own cache from step to step, where BLAS's own threads split otherwise
// (docs/measurements.md). The mixed-precision loops use MixedProduct.
constexpr int kSplitUnits = 512;

template <typename scalar_t>
struct ExactProduct {
  const scalar_t* w;
  int H;
  bool transpose;
  void accumulate(const scalar_t* a, int rows, scalar_t* c) {
    if (rows == 1 && transpose && std::is_same_v<scalar_t, float>) {
      one_row_product(nullptr, nullptr, 0, w, a, H, c);
    } else if (H >= kSplitUnits) {
      const int64_t blocks = H / 16;  // shares of whole 64-byte lines
      at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
        gemm_columns(transpose, rows, H, w, a, c, static_cast<int>(16 * first),
                     last == blocks ? H : static_cast<int>(16 * last));
      });
    } else {
      gemm_columns(transpose, rows, H, w, a, c, 0, H);
    }
  }
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ELMAN_PANELS 1
// c (rows x N) += a (rows x K) . b, float32, with b (K x N) as panels of 32 of its columns: panel p holds
// columns 32p .. 32p + 31 (zeros past N) row after row, K x 32 floats in a row, so that each step of the
// sum over k reads one row of the panel as two 64-byte lines. A tile of R rows of c by a panel's 32
// columns is 2R AVX-512 registers; R = 8 leaves registers for the two lines and a broadcast of a[r, k].
// Each element of c is one chain of fused multiply-adds over k in order, whichever thread takes its
// panel or its rows. On this project's AMD EPYC this runs at ~113 GFLOP/s per core, where MKL's sgemm
// ran at 88-100 on the same products (docs/measurements.md).
template <int R>
__attribute__((target("avx512f"))) void panel_tile(const float* a, int K, const float* panel, float* c, int N,
                                                   __mmask16 low, __mmask16 high) {
  __m512 sum_low[R], sum_high[R];
  for (int r = 0; r < R; ++r) sum_low[r] = sum_high[r] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m512 b_low = _mm512_loadu_ps(panel + 32 * k), b_high = _mm512_loadu_ps(panel + 32 * k + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 a_rk = _mm512_set1_ps(a[static_cast<int64_t>(r) * K + k]);
      sum_low[r] = _mm512_fmadd_ps(a_rk, b_low, sum_low[r]);
      sum_high[r] = _mm512_fmadd_ps(a_rk, b_high, sum_high[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* row = c + static_cast<int64_t>(r) * N;
    _mm512_mask_storeu_ps(row, low, _mm512_add_ps(_mm512_maskz_loadu_ps(low, row), sum_low[r]));
    _mm512_mask_storeu_ps(row + 16, high, _mm512_add_ps(_mm512_maskz_loadu_ps(high, row + 16), sum_high[r]));
  }
}

// The lanes of 16 columns of which n (at most 16, none below 0) are in c.
inline __mmask16 column_mask(int n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << std::max(n, 0)) - 1); }

// Panels [first, last) of c (rows x N) += a (rows x K) . b, b as pack_panels leaves it.
__attribute__((target("avx512f"))) void panel_product(const float* a, int64_t rows, int K, const float* panels,
                                                      float* c, int N, int64_t first, int64_t last) {
  using Tile = void (*)(const float*, int, const float*, float*, int, __mmask16, __mmask16);
  static constexpr Tile kTiles[] = {nullptr, panel_tile<1>, panel_tile<2>, panel_tile<3>, panel_tile<4>,
                                    panel_tile<5>, panel_tile<6>, panel_tile<7>, panel_tile<8>};
  for (int64_t p = first; p < last; ++p) {
    const int columns = std::min<int>(32, N - 32 * static_cast<int>(p));
    for (int64_t r = 0; r < rows; r += 8) {
      kTiles[std::min<int64_t>(8, rows - r)](a + r * K, K, panels + p * K * 32, c + r * N + 32 * p, N,
                                              column_mask(columns), column_mask(columns - 16));
    }
  }
}

bool has_panels() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

// Scratch memory that a thread keeps from one loop to the next, zeroed, one slot per use. Made and freed per
// call, the packed panels (a copy of W_hh: 1 MB at 512 units) went back to glibc after each call, which then
// returned memory to the system, and the next call's output faulted its pages in again: ~300 faults (0.15
// ms) per call at 64 x 20 x 256 (docs/measurements.md).
enum Slot { kFloatPanels = 0, kBf16Panels = 1, kBf16Operand = 2 };

at::Tensor kept_zeros(at::IntArrayRef sizes, at::ScalarType type, Slot slot) {
  // a normal tensor even where the first call runs under torch.inference_mode: an inference tensor could not
  // be zeroed in place by a later call outside it
  const c10::InferenceMode normal(false);
  thread_local at::Tensor kept[3];
  const int64_t n = c10::multiply_integers(sizes);
  at::Tensor& buffer = kept[slot];
  if (!buffer.defined() || buffer.numel() < n) buffer = at::empty({n}, type);
  at::Tensor zeros = buffer.narrow(0, 0, n).view(sizes);
  zeros.zero_();
  return zeros;
}

// op(w) (K x N) as panel_product reads it: (ceil(N / 32), K, 32). op(w) = w^T for w (N x K) when transpose_w,
// else w (K x N); all row-major.
at::Tensor pack_panels(const float* w, int K, int N, bool transpose_w) {
  at::Tensor panels = kept_zeros({(N + 31) / 32, K, 32}, at::kFloat, kFloatPanels);
  float* packed = panels.data_ptr<float>();
  at::parallel_for(0, panels.size(0), 1, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      for (int64_t column = 32 * p; column < std::min<int64_t>(32 * p + 32, N); ++column) {
        for (int64_t k = 0; k < K; ++k) {
          packed[(p * K + k) * 32 + column % 32] = transpose_w ? w[column * K + k] : w[k * N + column];
        }
      }
    }
  });
  return panels;
}

// Below this many steps of a loop, packing W_hh's panels (a copy of W_hh) costs more than it saves: at 64 x
// 512 two steps took 409 us against BLAS's 366, four were even, eight 8% faster (docs/measurements.md).
constexpr int64_t kPanelSteps = 8;
// A thread's share of multiply-adds below which splitting a product among threads costs more than it
// saves (a few microseconds to wake the threads; docs/measurements.md).
constexpr int64_t kPanelSplitWork = 1 << 18;

// Runs product(first, last) on shares of `panels` panels among the threads, each share kPanelSplitWork
// multiply-adds at least, for a product of `rows` rows by H x H.
template <typename Product>
void split_panels(int64_t panels, int rows, int H, const Product& product) {
  const int64_t panel_work = static_cast<int64_t>(rows) * H * 32;
  at::parallel_for(0, panels, (kPanelSplitWork + panel_work - 1) / panel_work, product);
}

// The recurrent product of a float32 loop on AVX-512, c += a W_hh^T (forward) or c += a W_hh (backward),
// by panel_product on W_hh packed once per loop; one_row_product for a forward step of one row. The threads
// split the panels (units) where each gets kPanelSplitWork multiply-adds, keeping their shares of W_hh in
// their own cores' caches from step to step.
struct PanelProduct {
  const float* w;
  int H;
  bool transpose;
  at::Tensor panels = pack_panels(w, H, H, transpose);

  void accumulate(const float* a, int rows, float* c) {
    if (rows == 0) return;  // every sequence has ended (lengths shorter than T)
    if (rows == 1 && transpose) {
      one_row_product(nullptr, nullptr, 0, w, a, H, c);
      return;
    }
    split_panels(panels.size(0), rows, H, [&](int64_t first, int64_t last) {
      panel_product(a, rows, H, panels.data_ptr<float>(), c, H, first, last);
    });
  }
};

// x rounded to bfloat16 (nearest even) and back.
__attribute__((target("avx512f,avx512bf16"))) inline __m512 bf16_rounded(__m512 x) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x)), 16));
}

// The mixed-precision product on AVX512-BF16, as panel_product: c (rows x N, float32) += round_bf16(a . b),
// a (rows x K) and b (K x N) bfloat16, summed in float32 by vdpbf16ps, which multiplies pairs of
// consecutive k: a row of a holds pairs (a[r, 2q], a[r, 2q + 1]) (zero past K), and panel p of b holds, for
// each pair q, each of its 32 columns' (b[2q, j], b[2q + 1, j]) side by side. The product is rounded to
// bfloat16 before it is added to c, as ATen's bfloat16 matmul returns it (the Python loop's arithmetic).
template <int R>
__attribute__((target("avx512f,avx512bf16"))) void bf16_panel_tile(const uint16_t* a, int pairs, const uint16_t* panel,
                                                                 float* c, int N, __mmask16 low, __mmask16 high) {
  __m512 sum_low[R], sum_high[R];
  for (int r = 0; r < R; ++r) sum_low[r] = sum_high[r] = _mm512_setzero_ps();
  for (int q = 0; q < pairs; ++q) {
    const __m512bh b_low = (__m512bh)_mm512_loadu_si512(panel + 64 * q);
    const __m512bh b_high = (__m512bh)_mm512_loadu_si512(panel + 64 * q + 32);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + 2 * (static_cast<int64_t>(r) * pairs + q), sizeof pair);
      const __m512bh a_rq = (__m512bh)_mm512_set1_epi32(pair);
      sum_low[r] = _mm512_dpbf16_ps(sum_low[r], a_rq, b_low);
      sum_high[r] = _mm512_dpbf16_ps(sum_high[r], a_rq, b_high);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* row = c + static_cast<int64_t>(r) * N;
    _mm512_mask_storeu_ps(row, low, _mm512_add_ps(_mm512_maskz_loadu_ps(low, row), bf16_rounded(sum_low[r])));
    _mm512_mask_storeu_ps(row + 16, high,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(high, row + 16), bf16_rounded(sum_high[r])));
  }
}

__attribute__((target("avx512f,avx512bf16"))) void bf16_panel_product(const uint16_t* a, int64_t rows, int pairs,
                                                                     const uint16_t* panels, float* c, int N,
                                                                     int64_t first, int64_t last) {
  using Tile = void (*)(const uint16_t*, int, const uint16_t*, float*, int, __mmask16, __mmask16);
  static constexpr Tile kTiles[] = {nullptr,            bf16_panel_tile<1>, bf16_panel_tile<2>,
                                    bf16_panel_tile<3>, bf16_panel_tile<4>, bf16_panel_tile<5>,
                                    bf16_panel_tile<6>, bf16_panel_tile<7>, bf16_panel_tile<8>};
  for (int64_t p = first; p < last; ++p) {
    const int columns = std::min<int>(32, N - 32 * static_cast<int>(p));
    for (int64_t r = 0; r < rows; r += 8) {
      kTiles[std::min<int64_t>(8, rows - r)](a + r * 2 * pairs, pairs, panels + p * pairs * 64, c + r * N + 32 * p, N,
                                              column_mask(columns), column_mask(columns - 16));
    }
  }
}

bool has_bf16_panels() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return yes;
}

// The recurrent product of a mixed-precision loop on AVX512-BF16: c += round_bf16(bf16(a) . w_op), w_op
// (H x H, bfloat16, any strides: W_hh^T forward, W_hh backward) packed once per loop. The rows of a are
// converted into a (B, H rounded up to even) bfloat16 buffer made once per loop. The threads split the
// panels as PanelProduct's do.
struct Bf16PanelProduct {
  int H, pairs;
  at::Tensor panels, operand;

  Bf16PanelProduct(const at::Tensor& w_op, int64_t batch)
      : H(static_cast<int>(w_op.size(0))),
        pairs((H + 1) / 2),
        panels(kept_zeros({(H + 31) / 32, pairs, 64}, at::kBFloat16, kBf16Panels)),
        operand(kept_zeros({batch, 2 * pairs}, at::kBFloat16, kBf16Operand)) {
    const auto* w = reinterpret_cast<const uint16_t*>(w_op.data_ptr<at::BFloat16>());
    const int64_t row_stride = w_op.stride(0), column_stride = w_op.stride(1);
    auto* packed = reinterpret_cast<uint16_t*>(panels.data_ptr<at::BFloat16>());
    at::parallel_for(0, panels.size(0), 1, [&](int64_t first, int64_t last) {
      for (int64_t column = 32 * first; column < std::min<int64_t>(32 * last, H); ++column) {
        uint16_t* to = packed + (column / 32 * pairs * 64 + 2 * (column % 32));
        for (int64_t k = 0; k < H; ++k) to[k / 2 * 64 + k % 2] = w[k * row_stride + column * column_stride];
      }
    });
  }

  void accumulate(const float* a, int rows, float* c) {
    if (rows == 0) return;  // every sequence has ended (lengths shorter than T)
    auto* converted = reinterpret_cast<uint16_t*>(operand.data_ptr<at::BFloat16>());
    for (int r = 0; r < rows; ++r) to_bf16(a + static_cast<int64_t>(r) * H, converted + 2 * pairs * r, H);
    const auto* packed = reinterpret_cast<const uint16_t*>(panels.data_ptr<at::BFloat16>());
    split_panels(panels.size(0), rows, H, [&](int64_t first, int64_t last) {
      bf16_panel_product(converted, rows, pairs, packed, c, H, first, last);
    });
  }
};
#else
bool has_panels() { return false; }
bool has_bf16_panels() { return false; }
#endif

// Whether a loop over these steps takes PanelProduct (float32) or Bf16PanelProduct (mixed).
bool takes_panels(const std::vector<int64_t>& batch_sizes, bool forward, bool mixed) {
  // the float32 loops' one_row_product takes a forward step of one row
  const int64_t fewest = forward && !mixed ? 2 : 1;
  const auto steps = std::count_if(batch_sizes.begin(), batch_sizes.end(), [&](int64_t n) { return n >= fewest; });
  return (mixed ? has_bf16_panels() : has_panels()) && steps >= kPanelSteps;
}

// The two loops, for any product: T steps over states (T, B, H) in place, the leading batch_sizes[t] rows
// at step t. Forward: states hold x_t W_ih^T + b on entry and h_t on return; previous is h0 (B, H).
template <typename scalar_t, typename Product>
void run_forward(scalar_t* states, const scalar_t* previous, Product& recurrent,
                 const std::vector<int64_t>& batch_sizes, int H, int64_t stride, int64_t activation) {
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    const int rows = static_cast<int>(batch_sizes[t]);
    scalar_t* step = states + static_cast<int64_t>(t) * stride;
    recurrent.accumulate(previous, rows, step);
    activate_(step, rows * H, activation);
    previous = step;
  }
}

// Backward: dz holds dL/dh_t from the outputs on entry and dL/dz_t (pre-activation) on return; out holds
// the forward pass's h_t.
template <typename scalar_t, typename Product>
void run_backward(scalar_t* dz, const scalar_t* out, Product& recurrent, const std::vector<int64_t>& batch_sizes,
                  int H, int64_t stride, int64_t activation) {
  for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
    const int rows = static_cast<int>(batch_sizes[t]);
    scalar_t* step = dz + t * stride;
    multiply_by_slope(step, out + t * stride, static_cast<int64_t>(rows) * H, activation);
    if (t > 0) recurrent.accumulate(step, rows, step - stride);
  }
}

// Calls run(recurrent, scalar) with the product that a loop over `buffer` (T, B, H) takes, and a value of its
// element type: forward, c += a W_hh^T; backward, c += a W_hh. Float32 and float64: PanelProduct where it
// pays, else ExactProduct (w_hh of the buffer's type). Mixed precision (w_hh bfloat16): Bf16PanelProduct where
// it pays, else MixedProduct.
template <typename Run>
void with_product(const at::Tensor& buffer, const at::Tensor& w_hh, const std::vector<int64_t>& batch_sizes,
                  bool forward, const Run& run) {
  const int H = static_cast<int>(buffer.size(2));
  if (w_hh.scalar_type() == at::kBFloat16) {
    const at::Tensor w_op = forward ? w_hh.t() : w_hh;
#ifdef ELMAN_PANELS
    if (takes_panels(batch_sizes, forward, true)) {
      Bf16PanelProduct recurrent(w_op, buffer.size(1));
      return run(recurrent, 0.0f);
    }
#endif
    MixedProduct recurrent(w_op, buffer.size(1));
    return run(recurrent, 0.0f);
  }
#ifdef ELMAN_PANELS
  if (buffer.scalar_type() == at::kFloat && takes_panels(batch_sizes, forward, false)) {
    PanelProduct recurrent{w_hh.data_ptr<float>(), H, forward};
    return run(recurrent, 0.0f);
  }
#endif
  AT_DISPATCH_FLOATING_TYPES(buffer.scalar_type(), "elman_loop", [&] {
    ExactProduct<scalar_t> recurrent{w_hh.data_ptr<scalar_t>(), H, forward};
    run(recurrent, scalar_t(0));
  });
}

// One of the two loops in place on `buffer` (T, B, H), as run_loop in fused.py. Forward: buffer holds
// x_t W_ih^T + b on entry and h_t on return (rows past a sequence's end are not touched), states is h0 (B, H).
// Backward: buffer holds dL/dh_t from the outputs on entry and dL/dz_t (pre-activation) on return, states
// holds the forward pass's h_t (T, B, H). w_hh: (H, H). batch_sizes[t]: how many leading rows are still
// running at step t.
void run_loop(bool forward, at::Tensor& buffer, const at::Tensor& states, const at::Tensor& w_hh,
              const std::vector<int64_t>& batch_sizes, int64_t activation) {
  const int H = static_cast<int>(buffer.size(2));
  const int64_t stride = buffer.size(1) * H;
  with_product(buffer, w_hh, batch_sizes, forward, [&](auto& recurrent, auto zero) {
    using scalar_t = decltype(zero);
    scalar_t* steps = buffer.data_ptr<scalar_t>();
    const scalar_t* given = states.data_ptr<scalar_t>();
    if (forward) {
      run_forward(steps, given, recurrent, batch_sizes, H, stride, activation);
    } else {
      run_backward(steps, given, recurrent, batch_sizes, H, stride, activation);
    }
  });
}

// The float32 / float64 loops (run_loop): out or dz (T, B, H), h0 (B, H), w_hh (H, H) of their dtype.
void forward_loop(at::Tensor out, const at::Tensor& h0, const at::Tensor& w_hh,
                  const std::vector<int64_t>& batch_sizes, int64_t activation) {
  check(out, "out", out);
  check(h0, "h0", out);
  check_batch_sizes(batch_sizes, out);
  const at::Tensor w = w_hh.contiguous();
  check(w, "w_hh", out);
  run_loop(true, out, h0, w, batch_sizes, activation);
}

void backward_loop(at::Tensor dz, const at::Tensor& out, const at::Tensor& w_hh,
                   const std::vector<int64_t>& batch_sizes, int64_t activation) {
  check(dz, "dz", dz);
  check(out, "out", dz);
  check_batch_sizes(batch_sizes, dz);
  const at::Tensor w = w_hh.contiguous();
  check(w, "w_hh", dz);
  run_loop(false, dz, out, w, batch_sizes, activation);
}

void check_mixed(const at::Tensor& t, const char* name, at::ScalarType type) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == type, name,
              " must be a contiguous CPU tensor of ", type);
  TORCH_CHECK(t.numel() < INT_MAX, name, " is too large for 32-bit BLAS");
}

// As forward_loop, for float32 out/h0 and a bfloat16 w_hh.
void forward_loop_bf16(at::Tensor out, const at::Tensor& h0, const at::Tensor& w_hh,
                       const std::vector<int64_t>& batch_sizes, int64_t activation) {
  check_mixed(out, "out", at::kFloat);
  check_mixed(h0, "h0", at::kFloat);
  check_batch_sizes(batch_sizes, out);
  check_mixed(w_hh, "w_hh", at::kBFloat16);
  run_loop(true, out, h0, w_hh, batch_sizes, activation);
}

// As backward_loop, for float32 dz/out and a bfloat16 w_hh.
void backward_loop_bf16(at::Tensor dz, const at::Tensor& out, const at::Tensor& w_hh,
                        const std::vector<int64_t>& batch_sizes, int64_t activation) {
  check_mixed(dz, "dz", at::kFloat);
  check_mixed(out, "out", at::kFloat);
  check_batch_sizes(batch_sizes, dz);
  check_mixed(w_hh, "w_hh", at::kBFloat16);
  run_loop(false, dz, out, w_hh, batch_sizes, activation);
}

// c (rows x n) += a (rows x k) . w^T, w (n x k). All row-major.
void gemm_nt(int rows, int n, int k, const float* w, const float* a, float* c) {
  const char transa = 'T', transb = 'N';
  const float one = 1.0f;
  sgemm_(&transa, &transb, &n, &rows, &k, &one, w, &k, a, &k, &one, c, &n);
}

void gemm_nt(int rows, int n, int k, const double* w, const double* a, double* c) {
  const char transa = 'T', transb = 'N';
  const double one = 1.0;
  dgemm_(&transa, &transb, &n, &rows, &k, &one, w, &k, a, &k, &one, c, &n);
}

// Outputs of the forward passes, kept for the next call of the same size once the caller has dropped them,
// as ONNX Runtime's arena keeps its buffers. Taken from and given back to glibc per call, an output's memory
// was returned to the system in some processes and faulted in anew by the next call: ~300 page faults per
// call at 64 x 20 x 256, 0.5 us each (docs/measurements.md). At most kKeptOutputs buffers, kKeptBytes in all,
// the most recent kept.
class OutputPool {
 public:
  static constexpr size_t kKeptOutputs = 4;
  static constexpr size_t kKeptBytes = size_t{64} << 20;

  static OutputPool& instance() {
    static auto* pool = new OutputPool;  // never destroyed: an output may outlive static destruction
    return *pool;
  }

  // A float32 (rows, columns) tensor, uninitialised, whose memory comes back here when the tensor goes.
  at::Tensor empty(int64_t rows, int64_t columns) {
    const size_t bytes = static_cast<size_t>(rows * columns) * sizeof(float);
    void* memory = take(bytes);
    if (memory == nullptr) memory = c10::alloc_cpu(bytes);
    return at::from_blob(memory, {rows, columns}, [bytes](void* kept) { instance().give_back(kept, bytes); },
                         at::TensorOptions().dtype(at::kFloat));
  }

 private:
  // the last kept of this size: the most likely to be in a cache still
  void* take(size_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = kept_.rbegin(); it != kept_.rend(); ++it) {
      if (it->first == bytes) {
        void* memory = it->second;
        kept_bytes_ -= bytes;
        kept_.erase(std::next(it).base());
        return memory;
      }
    }
    return nullptr;
  }

  // kept, the oldest kept let go where the limits say so (a new size of output replaces the old ones)
  void give_back(void* memory, size_t bytes) {
    if (bytes > kKeptBytes) return c10::free_cpu(memory);
    std::vector<void*> released;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      kept_.emplace_back(bytes, memory);
      kept_bytes_ += bytes;
      while (kept_.size() > kKeptOutputs || kept_bytes_ > kKeptBytes) {
        released.push_back(kept_.front().second);
        kept_bytes_ -= kept_.front().first;
        kept_.erase(kept_.begin());
      }
    }
    for (void* old : released) c10::free_cpu(old);
  }

  std::mutex mutex_;
  std::vector<std::pair<size_t, void*>> kept_;
  size_t kept_bytes_ = 0;
};

at::Tensor output_buffer(int64_t rows, int64_t columns) {
  TORCH_CHECK(rows >= 0 && columns >= 0, "output_buffer: sizes must not be negative");
  return OutputPool::instance().empty(rows, columns);
}

// Whether `step` can run on these operands: x (B, I); h and out (L, B, H), distinct and apart from x;
// weights the stack's W_ih, W_hh (and with `bias` b_ih, b_hh) of each layer in turn, nn.RNN's order; all
// contiguous CPU tensors of x's dtype, float32 or float64; no gradient asked for. Where not, ElmanRNN.step
// runs forward instead (which names what is wrong, if anything is).
bool step_fits(const at::Tensor& x, const at::Tensor& h, const at::Tensor& out, const std::vector<at::Tensor>& weights,
               bool bias) {
  const at::ScalarType type = x.scalar_type();
  const auto plain = [type](const at::Tensor& t) {
    return t.layout() == at::kStrided && t.device().is_cpu() && t.scalar_type() == type && t.is_contiguous() &&
           t.numel() < INT_MAX;
  };
  const auto apart = [](const at::Tensor& a, const at::Tensor& b) {
    const char *a0 = static_cast<const char*>(a.data_ptr()), *b0 = static_cast<const char*>(b.data_ptr());
    return a0 + a.nbytes() <= b0 || b0 + b.nbytes() <= a0;
  };
  const size_t per_layer = bias ? 4 : 2;
  if ((type != at::kFloat && type != at::kDouble) || weights.empty() || weights.size() % per_layer != 0 ||
      !plain(x) || !plain(h) || !plain(out) || x.dim() != 2 || h.dim() != 3 ||
      h.size(0) != static_cast<int64_t>(weights.size() / per_layer) || h.size(1) != x.size(0) ||
      out.sizes() != h.sizes() || !apart(out, h) || !apart(out, x)) {
    return false;
  }
  const bool grad = at::GradMode::is_enabled();
  if (grad && (x.requires_grad() || h.requires_grad() || out.requires_grad())) return false;
  const int64_t H = h.size(2);
  int64_t I = x.size(1);
  for (size_t first = 0; first < weights.size(); first += per_layer) {
    for (size_t k = first; k < first + per_layer; ++k) {
      if (!plain(weights[k]) || (grad && weights[k].requires_grad())) return false;
    }
    const at::Tensor &w_ih = weights[first], &w_hh = weights[first + 1];
    if (w_ih.dim() != 2 || w_ih.size(0) != H || w_ih.size(1) != I || w_hh.dim() != 2 || w_hh.size(0) != H ||
        w_hh.size(1) != H || (bias && (weights[first + 2].numel() != H || weights[first + 3].numel() != H))) {
      return false;
    }
    I = H;
  }
  return true;
}

// One time step of a unidirectional stack, for streaming inference: for each layer l,
//   out[l] = act(x_l W_ih[l]^T + b_ih[l] + h[l] W_hh[l]^T + b_hh[l]),   x_0 = x, x_{l+1} = out[l],
// on operands that step_fits. One call, no autograd: the fixed cost of a step is this function's, not a
// dispatcher's per operation. One float32 row (streaming, generation) takes one_row_product, anything else BLAS.
void run_step(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, const std::vector<at::Tensor>& weights,
              bool bias, int64_t activation) {
  const size_t per_layer = bias ? 4 : 2;
  const int B = static_cast<int>(x.size(0)), H = static_cast<int>(h.size(2));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "elman_step", [&] {
    const scalar_t* input = x.data_ptr<scalar_t>();
    int I = static_cast<int>(x.size(1));
    for (size_t first = 0, l = 0; first < weights.size(); first += per_layer, ++l) {
      scalar_t* c = out.data_ptr<scalar_t>() + l * B * H;
      if (bias) {
        const scalar_t* bias_ih = weights[first + 2].data_ptr<scalar_t>();
        const scalar_t* bias_hh = weights[first + 3].data_ptr<scalar_t>();
        for (int r = 0; r < B; ++r) {
          for (int j = 0; j < H; ++j) c[r * H + j] = bias_ih[j] + bias_hh[j];
        }
      } else {
        std::fill(c, c + B * H, scalar_t(0));
      }
      const scalar_t* w_ih = weights[first].data_ptr<scalar_t>();
      const scalar_t* w_hh = weights[first + 1].data_ptr<scalar_t>();
      const scalar_t* previous = h.data_ptr<scalar_t>() + l * B * H;
      if (B == 1 && std::is_same_v<scalar_t, float>) {
        one_row_product(w_ih, input, I, w_hh, previous, H, c);
      } else {
        gemm_nt(B, H, I, w_ih, input, c);
        gemm_nt(B, H, H, w_hh, previous, c);
      }
      activate_(c, B * H, activation);
      input = c;
      I = H;
    }
  });
}

// ElmanRNN.step's call: run_step where step_fits, and whether it did.
bool step(const at::Tensor& x, const at::Tensor& h, at::Tensor out, const std::vector<at::Tensor>& weights, bool bias,
          int64_t activation) {
  if (!step_fits(x, h, out, weights, bias)) return false;
  run_step(x, h, out, weights, bias, activation);
  return true;
}

// What sample_next (elman/inference/generator.py) draws from logits (B, V); top_k 0 and top_p 1 cut nothing.
at::Tensor sample_next(at::Tensor logits, double temperature, int64_t top_k, double top_p,
                       const at::Generator& generator) {
  if (temperature == 0) {
    return logits.argmax(1);
  }
  logits = logits / temperature;
  if (top_k > 0 && top_k < logits.size(1)) {
    const at::Tensor kth = std::get<0>(logits.topk(top_k, 1)).narrow(1, top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<double>::infinity());
  }
  if (top_p < 1) {
    auto [sorted_logits, order] = logits.sort(1, true);
    const at::Tensor probabilities = sorted_logits.softmax(1);
    const at::Tensor before = probabilities.cumsum(1) - probabilities;
    sorted_logits = sorted_logits.masked_fill(before >= top_p, -std::numeric_limits<double>::infinity());
    logits = at::full_like(logits, -std::numeric_limits<double>::infinity()).scatter(1, order, sorted_logits);
  }
  return at::multinomial(logits.softmax(1), 1, false, generator).squeeze(1);
}

// TextGenerator.generate's sampling loop, without guidance (see generator.py): from the logits (B, V) and
// state (L, B, H) after the prime, `length` times: mask the `never` ids, draw (sample_next), write `eos`
// for rows already ended, then read the drawn characters (the embedding's rows, plus `condition_input`
// (B, E) unless empty, through `step`, the output layer on the top layer's state). The same arithmetic as
// the Python loop, so that a seed draws the same characters; only the Python between the operations is
// gone, and two of them: the output layer's bias is -inf at the `never` ids (what the mask writes), and a
// long text (`stop_at_end` false) never draws `eos` (it is among `never`), so no row ends. Returns the drawn
// ids (B, length), `eos` after a row's end; with `stop_at_end` (lines) the loop ends once every row has.
at::Tensor generate(at::Tensor logits, at::Tensor state, const at::Tensor& embedding,
                    const at::Tensor& condition_input, const std::vector<at::Tensor>& weights, bool bias,
                    int64_t activation, const at::Tensor& out_weight,
                    const at::Tensor& out_bias, const at::Tensor& never, double temperature, int64_t top_k,
                    double top_p, int64_t length, int64_t eos, bool stop_at_end, const at::Generator& generator) {
  const int64_t rows = logits.size(0), layers = state.size(0);
  TORCH_CHECK(logits.dim() == 2 && state.dim() == 3 && state.size(1) == rows && state.is_contiguous(),
              "generate: logits (B, V), state (L, B, H)");
  constexpr double kNever = -std::numeric_limits<double>::infinity();
  at::Tensor sampled = at::zeros({rows, length}, logits.options().dtype(at::kLong));
  auto drawn = sampled.accessor<int64_t, 2>();
  at::Tensor finished = at::zeros({rows}, logits.options().dtype(at::kBool));
  at::Tensor spare = at::empty_like(state);
  const at::Tensor masked_bias = out_bias.index_put({never}, at::scalar_tensor(kNever, out_bias.options()));
  const at::Tensor out_weight_t = out_weight.t();
  logits.index_put_({at::indexing::Slice(), never}, kNever);
  for (int64_t position = 0; position < length; ++position) {
    at::Tensor chosen = sample_next(logits, temperature, top_k, top_p, generator);
    if (stop_at_end) {
      chosen = chosen.masked_fill(finished, eos);
      finished.bitwise_or_(chosen == eos);
    }
    const int64_t* ids = chosen.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      drawn[r][position] = ids[r];
    }
    if (stop_at_end && finished.all().item<bool>()) {
      break;
    }
    at::Tensor inputs = embedding.index_select(0, chosen);
    if (condition_input.numel() > 0) {
      inputs = inputs + condition_input;
    }
    TORCH_CHECK(step_fits(inputs, state, spare, weights, bias), "generate: the step's operands do not fit");
    run_step(inputs, state, spare, weights, bias, activation);
    std::swap(state, spare);
    logits = at::addmm(masked_bias, state.select(0, layers - 1), out_weight_t);
  }
  return sampled;
}

// Wellons' lowbias32: a 32-bit integer hash in which every input bit moves every output bit.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

ELMAN_VECTOR_CLONES
void scale_kept(const float* x, float* y, int64_t begin, int64_t end, uint32_t threshold, float scale,
                uint32_t key_low, uint32_t key_high) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t bits = mix32(mix32(static_cast<uint32_t>(i >> 1) ^ key_low) ^ key_high);
    const uint32_t level = (i & 1) ? bits >> 16 : bits & 0xFFFFu;
    y[i] = x[i] * (level >= threshold ? scale : 0.0f);
  }
}

// Dropout (see dropout.py), float32: y[i] = x[i] * scale when element i is kept, else x[i] * 0. Elements 2j
// and 2j + 1 take the low and high 16 bits of a hash of j and the 64-bit seed, and are kept when those
// bits, read as a number in [0, 65536), reach dropped_levels. Each element depends on its index alone, so
// the threads' shares give what one thread would, and the same seed gives the same mask again: the
// backward pass redraws it instead of keeping it. y may be x.
void dropout_apply(const at::Tensor& x, at::Tensor y, int64_t dropped_levels, double scale, int64_t seed) {
  for (const at::Tensor& t : {x, y}) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kFloat,
                "dropout_apply takes contiguous float32 CPU tensors");
  }
  TORCH_CHECK(x.numel() == y.numel(), "dropout_apply: x and y must have as many elements");
  TORCH_CHECK(x.numel() / 2 <= UINT32_MAX, "too many elements for 32-bit element pairs");
  TORCH_CHECK(dropped_levels >= 0 && dropped_levels <= 65536, "dropped_levels must lie in [0, 65536]");
  const float* in = x.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const auto key = static_cast<uint64_t>(seed);
  at::parallel_for(0, x.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
    scale_kept(in, out, begin, end, static_cast<uint32_t>(dropped_levels), static_cast<float>(scale),
               static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  if (sgemm_ == nullptr || dgemm_ == nullptr || vdTanh == nullptr) {
    throw std::runtime_error("this torch build exports no MKL sgemm_/dgemm_/vdTanh; the Python loop is used");
  }
  m.def("forward_loop", &forward_loop, "Elman recurrence, forward, in place (CPU)");
  m.def("backward_loop", &backward_loop, "Elman recurrence, BPTT, in place (CPU)");
  m.def("forward_loop_bf16", &forward_loop_bf16, "Elman recurrence, forward, bfloat16 GEMMs (CPU)");
  m.def("backward_loop_bf16", &backward_loop_bf16, "Elman recurrence, BPTT, bfloat16 GEMMs (CPU)");
  m.def("output_buffer", &output_buffer, "an uninitialised float32 (rows, columns) output, its memory kept for reuse");
  m.def("has_panels", &has_panels, "whether the float32 loops multiply by panel_product (AVX-512), else by BLAS");
  m.def("step_fits", &step_fits, "whether step runs on these operands");
  m.def("step", &step, "one step of a unidirectional Elman stack at inference, all layers in one call (CPU)");
  // without the GIL: a server's other threads go on while a text is drawn
  m.def("generate", &generate, "TextGenerator.generate's sampling loop, without guidance (CPU)",
        py::call_guard<py::gil_scoped_release>());
  m.def("dropout_apply", &dropout_apply, "dropout with a hashed mask, float32, y = x * mask (CPU)");
}
