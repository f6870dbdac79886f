// 2-D convolutions on oneDNN for XLA:CPU, as three XLA FFI handlers (selectivity_jax/models/onednn_conv.py builds
// this file on first use and registers the handlers).
//
// Layouts are flax's: input [N, H, W, C] (oneDNN "nhwc"), kernel [KH, KW, C / groups, O] (oneDNN "hwio", or
// "hwigo" with groups), output [N, OH, OW, O]. Activations are read and written in place in that layout; only the
// small kernel is reordered into the layout oneDNN's kernels prefer. Every handler takes the same attributes:
// stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right (explicit, non-negative padding) and groups.
//
//   SelectivityJaxConvForward:         (x, kernel)  -> y
//   SelectivityJaxConvBackwardData:    (dy, kernel) -> dx   (the input's cotangent)
//   SelectivityJaxConvBackwardWeights: (x, dy)      -> dkernel

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = dnnl::memory::format_tag;
using F32Buffer = ffi::Buffer<ffi::F32>;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's shapes and its oneDNN descriptors.
struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, groups;
  memory::dims strides, pad_l, pad_r;

  memory::desc Input() const { return memory::desc({n, c, h, w}, memory::data_type::f32, Tag::nhwc); }
  memory::desc Output() const { return memory::desc({n, o, oh, ow}, memory::data_type::f32, Tag::nhwc); }
  // The kernel as stored (HWIO) or in any layout oneDNN prefers.
  memory::desc Kernel(bool any) const {
    if (groups == 1) return memory::desc({o, c, kh, kw}, memory::data_type::f32, any ? Tag::any : Tag::hwio);
    return memory::desc({groups, o / groups, c / groups, kh, kw}, memory::data_type::f32,
                        any ? Tag::any : Tag::hwigo);
  }

  dnnl::convolution_forward::primitive_desc Forward() const {
    return dnnl::convolution_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training,
                                                     dnnl::algorithm::convolution_direct, Input(), Kernel(true),
                                                     Output(), strides, pad_l, pad_r, OwnScratchpad());
  }

  // XLA may run several convolutions at once (independent ones, or one per device of a mesh), and oneDNN's own
  // scratchpad is shared by all primitives: each execution gets its own (`Scratchpad`).
  static dnnl::primitive_attr OwnScratchpad() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }
};

// A primitive and its descriptor, made once per geometry: creating a descriptor searches oneDNN's implementations,
// which costs more than a small convolution. Executing one primitive from several threads at once is safe with a
// scratchpad per execution.
template <typename Primitive>
struct Prepared {
  typename Primitive::primitive_desc pd;
  Primitive primitive;
  memory Scratchpad() const { return memory(pd.scratchpad_desc(), Engine()); }
};

template <typename Primitive, typename MakeDescriptor>
const Prepared<Primitive>& Prepare(const Geometry& g, MakeDescriptor make) {
  static std::mutex mutex;
  static std::unordered_map<std::string, Prepared<Primitive>> prepared;  // element references survive rehashing
  std::string key;
  for (int64_t v : {g.n, g.h, g.w, g.c, g.kh, g.kw, g.o, g.oh, g.ow, g.groups, g.strides[0], g.strides[1],
                    g.pad_l[0], g.pad_l[1], g.pad_r[0], g.pad_r[1]}) {
    key += std::to_string(v) + ",";
  }
  std::lock_guard<std::mutex> lock(mutex);
  auto found = prepared.find(key);
  if (found == prepared.end()) {
    auto pd = make();
    found = prepared.emplace(key, Prepared<Primitive>{pd, Primitive(pd)}).first;
  }
  return found->second;
}

struct Attributes {
  int64_t stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, groups;
};

ffi::ErrorOr<Geometry> Mismatch(const char* what) {
  return ffi::Unexpected<ffi::Error>(ffi::Error::InvalidArgument(std::string("onednn_conv: ") + what));
}

// Shapes from the three buffers' dimensions (input, kernel, output).
ffi::ErrorOr<Geometry> MakeGeometry(ffi::Span<const int64_t> input, ffi::Span<const int64_t> kernel,
                                    ffi::Span<const int64_t> output, const Attributes& a) {
  if (input.size() != 4 || kernel.size() != 4 || output.size() != 4) return Mismatch("operands must be rank 4");
  Geometry g;
  g.n = input[0]; g.h = input[1]; g.w = input[2]; g.c = input[3];
  g.kh = kernel[0]; g.kw = kernel[1]; g.o = kernel[3];
  g.oh = output[1]; g.ow = output[2]; g.groups = a.groups;
  if (g.groups < 1 || g.c % g.groups || g.o % g.groups || kernel[2] != g.c / g.groups || output[0] != g.n ||
      output[3] != g.o) {
    return Mismatch("operand shapes do not match");
  }
  g.strides = {a.stride_h, a.stride_w};
  g.pad_l = {a.pad_top, a.pad_left};
  g.pad_r = {a.pad_bottom, a.pad_right};
  return g;
}

// `user` (the kernel as stored) as a memory in layout `wanted`: itself, or a reordered copy when they differ.
memory KernelIn(memory user, const memory::desc& wanted, dnnl::stream& stream) {
  if (wanted == user.get_desc()) return user;
  memory converted(wanted, Engine());
  dnnl::reorder(user, converted).execute(stream, user, converted);
  return converted;
}

ffi::Error Failed(const dnnl::error& e) {
  return ffi::Error(ffi::ErrorCode::kInternal, std::string("onednn_conv: ") + e.what());
}

ffi::Error Forward(F32Buffer x, F32Buffer kernel, ffi::Result<F32Buffer> y, int64_t stride_h,
                   int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                   int64_t groups) {
  auto g = MakeGeometry(x.dimensions(), kernel.dimensions(), y->dimensions(),
                        {stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, groups});
  if (g.has_error()) return g.error();
  try {
    const auto& conv = Prepare<dnnl::convolution_forward>(*g, [&] { return g->Forward(); });
    dnnl::stream stream(Engine());
    memory input(g->Input(), Engine(), x.typed_data());
    memory output(g->Output(), Engine(), y->typed_data());
    memory k = KernelIn(memory(g->Kernel(false), Engine(), kernel.typed_data()), conv.pd.weights_desc(), stream);
    conv.primitive.execute(stream, {{DNNL_ARG_SRC, input}, {DNNL_ARG_WEIGHTS, k}, {DNNL_ARG_DST, output},
                                    {DNNL_ARG_SCRATCHPAD, conv.Scratchpad()}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return Failed(e);
  }
  return ffi::Error::Success();
}

ffi::Error BackwardData(F32Buffer dy, F32Buffer kernel, ffi::Result<F32Buffer> dx, int64_t stride_h,
                        int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                        int64_t groups) {
  auto g = MakeGeometry(dx->dimensions(), kernel.dimensions(), dy.dimensions(),
                        {stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, groups});
  if (g.has_error()) return g.error();
  try {
    const auto& conv = Prepare<dnnl::convolution_backward_data>(*g, [&] {
      return dnnl::convolution_backward_data::primitive_desc(Engine(), dnnl::algorithm::convolution_direct,
                                                             g->Input(), g->Kernel(true), g->Output(), g->strides,
                                                             g->pad_l, g->pad_r, g->Forward(),
                                                             Geometry::OwnScratchpad());
    });
    dnnl::stream stream(Engine());
    memory output_grad(g->Output(), Engine(), dy.typed_data());
    memory input_grad(g->Input(), Engine(), dx->typed_data());
    memory k = KernelIn(memory(g->Kernel(false), Engine(), kernel.typed_data()), conv.pd.weights_desc(), stream);
    conv.primitive.execute(stream, {{DNNL_ARG_DIFF_DST, output_grad}, {DNNL_ARG_WEIGHTS, k},
                                    {DNNL_ARG_DIFF_SRC, input_grad}, {DNNL_ARG_SCRATCHPAD, conv.Scratchpad()}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return Failed(e);
  }
  return ffi::Error::Success();
}

ffi::Error BackwardWeights(F32Buffer x, F32Buffer dy, ffi::Result<F32Buffer> dkernel,
                           int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                           int64_t pad_right, int64_t groups) {
  auto g = MakeGeometry(x.dimensions(), dkernel->dimensions(), dy.dimensions(),
                        {stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, groups});
  if (g.has_error()) return g.error();
  try {
    const auto& conv = Prepare<dnnl::convolution_backward_weights>(*g, [&] {
      return dnnl::convolution_backward_weights::primitive_desc(Engine(), dnnl::algorithm::convolution_direct,
                                                                g->Input(), g->Kernel(true), g->Output(),
                                                                g->strides, g->pad_l, g->pad_r, g->Forward(),
                                                                Geometry::OwnScratchpad());
    });
    dnnl::stream stream(Engine());
    memory input(g->Input(), Engine(), x.typed_data());
    memory output_grad(g->Output(), Engine(), dy.typed_data());
    memory user_kernel(g->Kernel(false), Engine(), dkernel->typed_data());
    bool reorder = conv.pd.diff_weights_desc() != user_kernel.get_desc();
    memory computed = reorder ? memory(conv.pd.diff_weights_desc(), Engine()) : user_kernel;
    conv.primitive.execute(stream, {{DNNL_ARG_SRC, input}, {DNNL_ARG_DIFF_DST, output_grad},
                                    {DNNL_ARG_DIFF_WEIGHTS, computed}, {DNNL_ARG_SCRATCHPAD, conv.Scratchpad()}});
    if (reorder) dnnl::reorder(computed, user_kernel).execute(stream, computed, user_kernel);
    stream.wait();
  } catch (const dnnl::error& e) {
    return Failed(e);
  }
  return ffi::Error::Success();
}

}  // namespace

#define SELECTIVITY_JAX_CONV_BINDING                                                                      \
  ffi::Ffi::Bind()                                                                                        \
      .Arg<F32Buffer>()                                                                              \
      .Arg<F32Buffer>()                                                                              \
      .Ret<F32Buffer>()                                                                              \
      .Attr<int64_t>("stride_h")                                                                          \
      .Attr<int64_t>("stride_w")                                                                          \
      .Attr<int64_t>("pad_top")                                                                           \
      .Attr<int64_t>("pad_bottom")                                                                        \
      .Attr<int64_t>("pad_left")                                                                          \
      .Attr<int64_t>("pad_right")                                                                         \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(SelectivityJaxConvForward, Forward, SELECTIVITY_JAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(SelectivityJaxConvBackwardData, BackwardData, SELECTIVITY_JAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(SelectivityJaxConvBackwardWeights, BackwardWeights, SELECTIVITY_JAX_CONV_BINDING);
