"""The Train step: the run folder, the detached launcher, the worker and its Trainer."""
