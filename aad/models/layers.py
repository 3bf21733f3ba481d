"""Convolutions of AESc in a faster but exactly equivalent form.

XLA:CPU runs 5x5 stride-2 convolutions and 5x5 convolutions on nearest-
upsampled inputs far below its peak. Both can be rewritten exactly:
- stride-2 SAME conv == stride-1 conv on the space-to-depth (2x2) input, with
  the kernel zero-padded to even size and rearranged (5x5 -> 3x3 taps on 4x
  the channels);
- conv(upsample_x2(x)) == depth-to-space(conv'(x)) where conv' has 4x the
  output channels, one per sub-pixel phase, its taps summed from the
  original kernel (25 taps -> 9 per output pixel for 5x5).
The parameters stay the plain (k, k, C_in, C_out) kernel and bias, so
checkpoints do not depend on the implementation; `impl='plain'` runs the
textbook form and is the reference in tests.

The rearranged kernels depend on the weights alone. Training builds them
in every step (its weights change, and its gradients reach the plain
kernel through them); inference builds them once per loaded checkpoint:
`prepare` adds each one to the variables as a 'fast_kernel' parameter
beside the plain 'kernel', and a network built with `prepared=True` reads
it instead of rebuilding it in every call.
"""

import jax
from jax import lax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

_DIMS = ('NHWC', 'HWIO', 'NHWC')

# The name scope of the kernel rearrangements: in a trace of inference with
# prepared variables no operation carries it (tests/test_prepared.py).
KERNEL_SCOPE = 'rearrange_kernel'


# XLA:CPU's convolution is very slow on tiny feature maps; there an
# explicit im2col + matmul is much faster, and it is exact. Maps are
# compared by their output pixels per image.
_IM2COL_MAX_PIXELS = 16


def _same_padding(size, k, stride):
  """TF/XLA SAME padding (the extra pixel goes bottom/right)."""
  total = max((-(-size // stride) - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def _trim_taps(kernel, sizes, padding, stride):
  """Drops the kernel taps that only ever read padding (exact).

  On maps smaller than the kernel (the deepest levels) most taps of a SAME
  conv read zeros: e.g. a 5x5 stride-2 conv from 2x2 to 1x1 uses only its
  central 2x2 taps. Their products are 0 and their gradients exactly 0, so
  convolving with the used window gives the same outputs and gradients
  with a fraction of the weights read and multiplied.

  Args:
    kernel: (kh, kw, cin, cout).
    sizes: the input's (height, width).
    padding: ((top, bottom), (left, right)).
    stride: the conv's stride (both axes).

  Returns:
    (kernel window, padding that keeps the output size).
  """
  window, new_padding = [], []
  for axis, (n, (lo, hi)) in enumerate(zip(sizes, padding)):
    k = kernel.shape[axis]
    out = (n + lo + hi - k) // stride + 1
    # Output i reads input stride * i - lo + u for tap u.
    first = max(0, lo - stride * (out - 1))
    last = min(k - 1, lo + n - 1)
    window.append(slice(first, last + 1))
    new_lo = lo - first
    # Rows past the last output's window are not needed (max: no cropping).
    new_padding.append((new_lo, max(0, stride * (out - 1) + last - first +
                                    1 - n - new_lo)))
  return kernel[window[0], window[1]], tuple(new_padding)


def _im2col_conv(x, kernel, padding, stride=1):
  """Conv as one matmul over explicit k x k patches (exact)."""
  kernel, padding = _trim_taps(kernel, x.shape[1:3], padding, stride)
  kh, kw, cin, cout = kernel.shape
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  oh = (xp.shape[1] - kh) // stride + 1
  ow = (xp.shape[2] - kw) // stride + 1
  cols = jnp.concatenate(
      [xp[:, i:i + stride * (oh - 1) + 1:stride,
          j:j + stride * (ow - 1) + 1:stride]
       for i in range(kh) for j in range(kw)], axis=-1)
  y = cols.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, cout)
  return y.reshape(x.shape[0], oh, ow, cout)


def conv(x, kernel, padding):
  """Stride-1 conv; `padding` is 'SAME' or ((top, bottom), (left, right)).

  Taps that only read padding are dropped, and maps of at most
  _IM2COL_MAX_PIXELS output pixels run as im2col + matmul (both exact).
  """
  kernel = kernel.astype(x.dtype)
  kh, kw = kernel.shape[:2]
  if padding == 'SAME':
    padding = (_same_padding(x.shape[1], kh, 1),
               _same_padding(x.shape[2], kw, 1))
  if x.shape[1] * x.shape[2] > _IM2COL_MAX_PIXELS:
    kernel, padding = _trim_taps(kernel, x.shape[1:3], padding, 1)
    return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                    dimension_numbers=_DIMS)
  return _im2col_conv(x, kernel, padding)


def space_to_depth(x):
  """(N, H, W, C) -> (N, H/2, W/2, 4C), channels ordered (row, col, c)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def depth_to_space(x):
  """(N, H, W, 4C) with channels (row, col, c) -> (N, 2H, 2W, C)."""
  n, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, 2 * h, 2 * w, c)


def upsample2(x):
  """Nearest-neighbour x2 upsampling of an NHWC batch (exact)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _s2d_geometry(k):
  """(zero taps in front, taps per axis, top padding) of the stride-1 form
  of a k x k stride-2 SAME conv."""
  top = (k - 2) // 2          # TF/XLA SAME: the extra pad goes bottom/right
  front = top % 2             # zero taps so that tap u+front = 2q + r
  taps = (k + front + 1) // 2
  return front, taps, (top + 1) // 2


def s2d_kernel(kernel):
  """(k, k, C, F) -> the (t, t, 4C, F) kernel of `strided_conv_s2d`'s
  stride-1 conv: zero-padded to even size and rearranged (exact)."""
  with jax.named_scope(KERNEL_SCOPE):
    k = kernel.shape[0]
    front, taps, _ = _s2d_geometry(k)
    kernel = jnp.pad(kernel, ((front, 2 * taps - k - front),
                              (front, 2 * taps - k - front), (0, 0), (0, 0)))
    cin, cout = kernel.shape[2:]
    kernel = kernel.reshape(taps, 2, taps, 2, cin, cout)
    return kernel.transpose(0, 2, 1, 3, 4, 5).reshape(taps, taps, 4 * cin,
                                                      cout)


def strided_conv_s2d(x, kernel, fast_kernel=None):
  """SAME, stride-2 conv of even-sized x as a stride-1 conv after s2d.

  `fast_kernel`: s2d_kernel(kernel), built once (prepared variables);
  None builds it here.
  """
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  if (h // 2) * (w // 2) <= _IM2COL_MAX_PIXELS:
    # im2col anyway: strided patches need 25 taps (not 36) and no kernel
    # rearrangement, which costs more than these convs on small maps.
    return _im2col_conv(x, kernel.astype(x.dtype),
                        (_same_padding(h, k, 2), _same_padding(w, k, 2)), 2)
  _, taps, lo = _s2d_geometry(k)
  if fast_kernel is None:
    fast_kernel = s2d_kernel(kernel)
  return conv(space_to_depth(x), fast_kernel, ((lo, taps - 1 - lo),) * 2)


def _phase_offsets(k):
  """(offsets, lo, hi): offsets[s, u] the low-resolution offset that tap u
  of a SAME conv on upsample_x2 input reads for output phase s; the
  sub-pixel conv's padding (lo, hi) covers them."""
  c = (k - 1) // 2
  offsets = np.array([[(s + u - c) // 2 for u in range(k)] for s in (0, 1)])
  return offsets, -offsets.min(), offsets.max()


def _phase_matrix(k):
  """P[s, d, u] = 1 where tap u of a SAME conv on upsample_x2 input reads
  low-resolution offset d (shifted to start at 0) for output phase s."""
  offsets, lo, hi = _phase_offsets(k)
  p = np.zeros((2, hi + lo + 1, k), np.float32)
  for s in (0, 1):
    for u in range(k):
      p[s, offsets[s, u] + lo, u] = 1.0
  return p


def subpixel_kernel(kernel):
  """(k, k, C, F) -> the (d, d, C, 4F) kernel of `upsampled_conv_subpixel`:
  one output channel per sub-pixel phase, its taps summed from `kernel`."""
  with jax.named_scope(KERNEL_SCOPE):
    k = kernel.shape[0]
    p = _phase_matrix(k)
    cin, cout = kernel.shape[2:]
    d = p.shape[1]
    # One (36, 25) x (25, cin * cout) matmul: XLA lowers the equivalent
    # 3-operand einsum to skinny dots and transposes that cost more than
    # the 3x3 conv of the deepest layers.
    taps = np.einsum('adh,bew->deabhw', p, p).reshape(d * d * 4, k * k)
    sub = jnp.asarray(taps, kernel.dtype) @ kernel.reshape(k * k, cin * cout)
    sub = sub.reshape(d, d, 2, 2, cin, cout).transpose(0, 1, 4, 2, 3, 5)
    return sub.reshape(d, d, cin, 4 * cout)


def upsampled_conv_subpixel(x, kernel, fast_kernel=None):
  """conv_SAME(upsample2(x), kernel) without materialising the upsample.

  `fast_kernel`: subpixel_kernel(kernel), built once (prepared variables);
  None builds it here.
  """
  if 4 * x.shape[1] * x.shape[2] <= _IM2COL_MAX_PIXELS:
    # On maps this small the sub-pixel kernel (4x the weights, and its
    # gradient in training) costs more than the 2.8x MACs saved.
    return conv(upsample2(x), kernel, 'SAME')
  _, lo, hi = _phase_offsets(kernel.shape[0])
  if fast_kernel is None:
    fast_kernel = subpixel_kernel(kernel)
  return depth_to_space(conv(x, fast_kernel, ((lo, hi),) * 2))


class Conv(nn.Module):
  """k x k convolution with bias; optional stride 2 or x2 input upsampling.

  Attributes:
    features: output channels.
    kernel_size: square kernel size (odd).
    stride: 1 or 2 (SAME padding).
    upsample_input: convolve the nearest-upsampled (x2) input.
    impl: 'fast' (exact reformulations above) or 'plain' (reference).
    prepared: the fast form's kernel is the parameter 'fast_kernel' (built
      once by `prepare`) instead of being built from 'kernel' in every call.
      For inference; training and checkpoints use prepared=False.
    dtype: computation dtype.
  """
  features: int
  kernel_size: int = 5
  stride: int = 1
  upsample_input: bool = False
  impl: str = 'fast'
  prepared: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.glorot_uniform(),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    x = x.astype(self.dtype)
    if self.impl not in ('fast', 'plain'):
      raise ValueError(f"conv impl {self.impl!r}: choose 'fast' or 'plain'")
    fast = self.impl == 'fast'
    build = (subpixel_kernel if self.upsample_input else
             s2d_kernel if self.stride == 2 else None)
    fast_kernel = None
    if fast and build and self.prepared:
      fast_kernel = self.param('fast_kernel', lambda _: build(kernel))
    if self.upsample_input:
      y = (upsampled_conv_subpixel(x, kernel, fast_kernel) if fast else
           lax.conv_general_dilated(upsample2(x), kernel.astype(x.dtype),
                                    (1, 1), 'SAME', dimension_numbers=_DIMS))
    elif self.stride == 2:
      y = (strided_conv_s2d(x, kernel, fast_kernel) if fast else
           lax.conv_general_dilated(x, kernel.astype(x.dtype), (2, 2), 'SAME',
                                    dimension_numbers=_DIMS))
    elif not fast:
      y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), 'SAME',
                                   dimension_numbers=_DIMS)
    else:
      y = conv(x, kernel, 'SAME')
    return y + bias.astype(y.dtype)


def prepare(module: nn.Module, variables, shape) -> dict:
  """The variables of `module`, built with prepared=True, from its plain
  ones (a checkpoint's): each fast-form kernel built once and added as
  'fast_kernel' beside its 'kernel' (the plain kernel stays, for the maps
  too small for the fast form). Exact: the same operations as a call that
  builds them; the result serves inputs of any size.

  Args:
    module: the network, with prepared=True.
    variables: its plain variables ({'params': ..., 'batch_stats': ...}).
    shape: (H, W, C) of an input the network accepts (its layers' kernels
      must fit it, e.g. a Dense layer's its input size): one pass on a
      zero image reaches every layer, and is dead code once compiled.
  """
  def build(variables):
    _, state = module.apply(variables, jnp.zeros((1, *shape), jnp.float32),
                            mutable=['params'],
                            rngs={'params': jax.random.key(0)})
    return {**variables, 'params': state['params']}
  return jax.jit(build)(variables)


def prepared_kernels(variables) -> int:
  """How many prepared fast-form kernels `variables` hold."""
  paths = jax.tree_util.tree_flatten_with_path(variables)[0]
  return sum(1 for path, _ in paths
             if getattr(path[-1], 'key', None) == 'fast_kernel')
