"""The float32 parity bound: how far two correct float32 builds of one network may be apart.

Two frameworks (or one framework on two machines) sum a conv's products in different
orders (ATen, oneDNN and XLA tile and vectorise differently, with the SIMD width of
the CPU). Each float32 sum of n products carries a rounding error of at most about
n * 2^-24 of the sum of their magnitudes, and in practice ~sqrt(n) * 2^-24; a ResNet
output passes some 50 such layers, so correct builds land ~1e-6 to 1e-5 of the output
scale apart on any CPU (trap 15, measured 5e-6 on oneDNN). 1e-4 leaves an order of
magnitude above that, and a real mistake (a layout, padding, epsilon or stride bug)
moves outputs by 1e-3 to order 1, so the bound still catches every one of them.
Differences are measured relative to the output's scale (max |reference|), never
elementwise: near-zero logits carry absolute noise of the scale's size.
"""

F32_PARITY = 1e-4
