"""LM-based recommendation: prompts, shared-prefix candidate scoring, evaluation."""
