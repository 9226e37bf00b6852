"""Policy core: batching, summed completion log-probs, reference handling."""
