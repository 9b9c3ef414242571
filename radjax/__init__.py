"""radjax: pure-JAX medical image classification (Lakhani et al., J Digit Imaging 2018, and beyond)."""

__version__ = "0.1.0"
