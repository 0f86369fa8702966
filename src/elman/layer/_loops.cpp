// The two sequential loops of the fused Elman recurrence, compiled for CPU tensors.
//
// They are line-for-line the loops `forward_loop` and `backward_loop` in fused.py; see there for the
// equations and shapes. Compiling them removes the Python interpreter from the per-step cost, which is
// what dominates small batches and short hidden sizes. `at::cpu::` calls skip the dispatcher: the inputs
// are checked to be contiguous CPU tensors of one floating dtype before the loop starts.

#include <torch/extension.h>
#include <ATen/CPUFunctions.h>

#include <vector>

namespace {

enum Activation : int64_t { kTanh = 0, kRelu = 1, kSigmoid = 2 };

void activate_(at::Tensor& x, int64_t activation) {
  switch (activation) {
    case kTanh: at::cpu::tanh_(x); break;
    case kRelu: at::relu_(x); break;
    case kSigmoid: at::cpu::sigmoid_(x); break;
    default: TORCH_CHECK(false, "unknown activation code ", activation);
  }
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// out: (T, B, H), holding x_t W_ih^T + b on entry and h_t on return (rows past a sequence's end are not
// touched). h0: (B, H). w_hh: (H, H). steps_active[t]: how many leading rows are still running at step t.
void forward_loop(at::Tensor out, const at::Tensor& h0, const at::Tensor& w_hh,
                  const std::vector<int64_t>& steps_active, int64_t activation) {
  check_cpu(out, "out");
  check_cpu(h0, "h0");
  const at::Tensor w_hh_t = w_hh.t();
  at::Tensor h = h0;
  for (size_t t = 0; t < steps_active.size(); ++t) {
    const int64_t n = steps_active[t];
    at::Tensor step = out.select(0, static_cast<int64_t>(t)).narrow(0, 0, n);
    at::cpu::addmm_(step, h.narrow(0, 0, n), w_hh_t);
    activate_(step, activation);
    h = step;
  }
}

// dz: (T, B, H), holding dL/dh_t from the outputs on entry and dL/dz_t (pre-activation) on return.
// slope: (T, B, H), act'(z_t) written in terms of h_t.
void backward_loop(at::Tensor dz, const at::Tensor& slope, const at::Tensor& w_hh,
                   const std::vector<int64_t>& steps_active) {
  check_cpu(dz, "dz");
  check_cpu(slope, "slope");
  for (int64_t t = static_cast<int64_t>(steps_active.size()) - 1; t >= 0; --t) {
    const int64_t n = steps_active[t];
    at::Tensor step = dz.select(0, t).narrow(0, 0, n);
    step.mul_(slope.select(0, t).narrow(0, 0, n));
    if (t > 0) {
      at::Tensor previous = dz.select(0, t - 1).narrow(0, 0, n);
      at::cpu::addmm_(previous, step, w_hh);
    }
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "Elman recurrence, forward, in place (CPU)");
  m.def("backward_loop", &backward_loop, "Elman recurrence, BPTT, in place (CPU)");
}
