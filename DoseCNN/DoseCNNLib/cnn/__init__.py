"""The residual dose CNN that learns Monte Carlo minus VDK: network, training data, training, weights, inference."""
