"""Text encoders: tokenisation, truncation and pooling; nothing here imports image code."""
