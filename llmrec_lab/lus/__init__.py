"""Long-term user satisfaction: simulate a world's users under a policy, the policies, the
satisfaction model and the metrics that compare policies (Chapter 3.4's experiment, which runs
them, is :mod:`llmrec_lab.experiments.long_term`)."""
