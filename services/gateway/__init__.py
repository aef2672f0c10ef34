"""The V2 inference gateway: synchronous Open Inference Protocol answers, recorded on topics."""
