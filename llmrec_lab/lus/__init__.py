"""Long-term user satisfaction: simulate a world's users under a policy, and compare policies."""
