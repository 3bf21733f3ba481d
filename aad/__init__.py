"""aad: autoencoder-based visual anomaly detection in JAX/Flax."""
