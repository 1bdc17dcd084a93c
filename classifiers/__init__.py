"""Heads that turn embeddings into answers, fine-tuning jobs and domain adaptation."""
