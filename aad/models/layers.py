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
"""

import flax.linen as nn
from jax import lax
import jax.numpy as jnp
import numpy as np

_DIMS = ('NHWC', 'HWIO', 'NHWC')


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


def strided_conv_s2d(x, kernel):
  """SAME, stride-2 conv of even-sized x as a stride-1 conv after s2d."""
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  if (h // 2) * (w // 2) <= _IM2COL_MAX_PIXELS:
    # im2col anyway: strided patches need 25 taps (not 36) and no kernel
    # rearrangement, which costs more than these convs on small maps.
    return _im2col_conv(x, kernel.astype(x.dtype),
                        (_same_padding(h, k, 2), _same_padding(w, k, 2)), 2)
  top = (k - 2) // 2          # TF/XLA SAME: the extra pad goes bottom/right
  front = top % 2             # zero taps so that tap u+front = 2q + r
  taps = (k + front + 1) // 2
  kernel = jnp.pad(kernel, ((front, 2 * taps - k - front),
                            (front, 2 * taps - k - front), (0, 0), (0, 0)))
  cin, cout = kernel.shape[2:]
  kernel = kernel.reshape(taps, 2, taps, 2, cin, cout)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5).reshape(taps, taps, 4 * cin,
                                                      cout)
  lo = (top + 1) // 2
  return conv(space_to_depth(x), kernel, ((lo, taps - 1 - lo),) * 2)


def _phase_matrix(k):
  """P[s, d, u] = 1 where tap u of a SAME conv on upsample_x2 input reads
  low-resolution offset d (shifted to start at 0) for output phase s."""
  c = (k - 1) // 2
  offsets = np.array([[(s + u - c) // 2 for u in range(k)] for s in (0, 1)])
  lo, hi = offsets.min(), offsets.max()
  p = np.zeros((2, hi - lo + 1, k), np.float32)
  for s in (0, 1):
    for u in range(k):
      p[s, offsets[s, u] - lo, u] = 1.0
  return p, -lo, hi


def upsampled_conv_subpixel(x, kernel):
  """conv_SAME(upsample2(x), kernel) without materialising the upsample."""
  if 4 * x.shape[1] * x.shape[2] <= _IM2COL_MAX_PIXELS:
    # On maps this small the sub-pixel kernel (4x the weights, rebuilt
    # every call, and its gradient) costs more than the 2.8x MACs saved.
    return conv(upsample2(x), kernel, 'SAME')
  k = kernel.shape[0]
  p, lo, hi = _phase_matrix(k)
  cin, cout = kernel.shape[2:]
  d = p.shape[1]
  # One (36, 25) x (25, cin * cout) matmul: XLA lowers the equivalent
  # 3-operand einsum to skinny dots and transposes that cost more than the
  # 3x3 conv of the deepest layers.
  taps = np.einsum('adh,bew->deabhw', p, p).reshape(d * d * 4, k * k)
  sub = jnp.asarray(taps, kernel.dtype) @ kernel.reshape(k * k, cin * cout)
  sub = sub.reshape(d, d, 2, 2, cin, cout).transpose(0, 1, 4, 2, 3, 5)
  sub = sub.reshape(d, d, cin, 4 * cout)
  return depth_to_space(conv(x, sub, ((lo, hi),) * 2))


class Conv(nn.Module):
  """k x k convolution with bias; optional stride 2 or x2 input upsampling.

  Attributes:
    features: output channels.
    kernel_size: square kernel size (odd).
    stride: 1 or 2 (SAME padding).
    upsample_input: convolve the nearest-upsampled (x2) input.
    impl: 'fast' (exact reformulations above) or 'plain' (reference).
    dtype: computation dtype.
  """
  features: int
  kernel_size: int = 5
  stride: int = 1
  upsample_input: bool = False
  impl: str = 'fast'
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
    if self.upsample_input:
      y = (upsampled_conv_subpixel(x, kernel) if fast else
           lax.conv_general_dilated(upsample2(x), kernel.astype(x.dtype),
                                    (1, 1), 'SAME', dimension_numbers=_DIMS))
    elif self.stride == 2:
      y = (strided_conv_s2d(x, kernel) if fast else
           lax.conv_general_dilated(x, kernel.astype(x.dtype), (2, 2), 'SAME',
                                    dimension_numbers=_DIMS))
    elif not fast:
      y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), 'SAME',
                                   dimension_numbers=_DIMS)
    else:
      y = conv(x, kernel, 'SAME')
    return y + bias.astype(y.dtype)
